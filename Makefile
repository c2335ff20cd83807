# `make run`: install, fetch the offline checkpoints, run the main job on its defaults.
# `make test`: install, fetch the offline checkpoints, run the whole test suite.
# `make bench`: measure encoding, training, indexing and search; writes bench/results.json and bench/summary.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKPOINTS := .cache/checkpoints
# No model or dataset hub is reachable on the machines this targets; fail fast instead of hanging.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# `make sweep-rank` runs sweeps/rank.yaml; SWEEP_SCALE=smoke runs the same grid on the smoke preset.
SWEEP_SCALE ?= full
SWEEP_ARGS = $(if $(filter smoke,$(SWEEP_SCALE)),experiment=smoke hydra.sweep.dir=outputs/sweeps/$*-smoke)
STUDIES := $(basename $(notdir $(wildcard sweeps/*.yaml)))

.PHONY: install checkpoints run smoke test test-fast bench bench-scale clean sweeps $(addprefix sweep-,$(STUDIES))

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]' > $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	touch $@

checkpoints: $(CHECKPOINTS)/splade-2l/config.json

$(CHECKPOINTS)/splade-2l/config.json: | install
	$(PY) -m splade_peft.model.pretrained $(CHECKPOINTS)

run: install checkpoints
	$(PY) -m splade_peft

smoke: install
	$(PY) -m splade_peft experiment=smoke

sweeps:
	@echo "studies: $(STUDIES)"; echo "run one with: make sweep-<study> [SWEEP_SCALE=smoke]"

$(addprefix sweep-,$(STUDIES)): sweep-%: install checkpoints
	$(PY) -m splade_peft -m +sweep=$* $(SWEEP_ARGS)

test: install checkpoints
	$(PY) -m pytest

test-fast: install checkpoints
	$(PY) -m pytest -m "not slow"

bench: install checkpoints
	$(PY) -m splade_peft.bench --out bench

# 200k synthetic documents through encode -> Lucene index on the tiny model: peak RSS, throughput -> bench/scale.json
bench-scale: install
	$(PY) -m splade_peft.bench.scale

clean:
	rm -rf outputs multirun .pytest_cache
