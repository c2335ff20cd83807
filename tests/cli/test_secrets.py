"""No credential reaches an artefact or the console; models and checkpoints load without running foreign code."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from splade_peft.records import REDACTED, redact

ENV_SECRETS = {"WANDB_API_KEY": "wandb-fake-0123456789abcdef", "HF_TOKEN": "hf_FakeToken0123456789",
               "MY_DB_PASSWORD": "correct-horse-battery"}
CONFIG_SECRET = "cfg-secret-9876543210"


def test_credentials_are_redacted_by_name_by_override_and_by_value(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_FakeToken0123456789")
    payload = {
        "logger": {"api_key": "abc123456789", "project": "p"},
        "index": {"tokens_per_batch": 8192},
        "hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["sweep"]}}}},
        "overrides": ["+data.hub_token=abc", "lora.r=8", "+db.password=hunter2"],
        "url": "https://hf.co/api?token=hf_FakeToken0123456789",
    }
    assert redact(payload) == {
        "logger": {"api_key": REDACTED, "project": "p"},
        "index": {"tokens_per_batch": 8192},
        "hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["sweep"]}}}},
        "overrides": [f"+data.hub_token={REDACTED}", "lora.r=8", f"+db.password={REDACTED}"],
        "url": f"https://hf.co/api?token={REDACTED}",
    }


def run_smoke(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splade_peft", f"hydra.run.dir={run_dir}", "experiment=smoke", "logger=wandb",
         "logger.mode=offline", "eval.bm25=false", "eval.zero_shot=false", "data.negatives_source=random",
         "data.max_queries=8", "data.max_documents=40", "trainer.max_steps=1", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **ENV_SECRETS},
    )


def assert_no_secret_in(run_dir: Path, completed: subprocess.CompletedProcess) -> None:
    for secret in [*ENV_SECRETS.values(), CONFIG_SECRET]:
        assert secret not in completed.stdout + completed.stderr
        for path in (p for p in run_dir.rglob("*") if p.is_file()):
            assert secret.encode() not in path.read_bytes(), f"{secret} leaked into {path}"


@pytest.mark.slow
def test_no_secret_reaches_results_saved_config_wandb_files_error_log_or_console(tmp_path):
    completed = run_smoke(tmp_path / "run")
    assert completed.returncode == 0, completed.stderr[-3000:]
    # offline W&B keeps config, metadata, console and run name in the .wandb file
    wandb_runs = list((tmp_path / "run").rglob("*.wandb"))
    assert wandb_runs and b"tokens_per_batch" in wandb_runs[0].read_bytes()
    assert_no_secret_in(tmp_path / "run", completed)


@pytest.mark.slow
def test_a_secret_in_a_refused_override_reaches_no_artefact(tmp_path):
    completed = run_smoke(tmp_path / "run", f"+data.hub_token={CONFIG_SECRET}")
    assert "config key 'data.hub_token': is not a key this project reads" in completed.stderr, completed.stderr[-3000:]
    # Refused by the command line's check before any job: no job folder, nothing written, the console clean.
    assert completed.returncode == 1 and not (tmp_path / "run").exists()
    assert_no_secret_in(tmp_path, completed)


def calls_in_package():
    for path in sorted((REPO / "splade_peft").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                yield path.relative_to(REPO), node


def call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def keyword(node: ast.Call, name: str):
    return next((ast.unparse(k.value) for k in node.keywords if k.arg == name), None)


def test_no_shell_no_unsafe_load_no_forced_remote_code():
    for path, call in calls_in_package():
        where = f"{path}:{call.lineno}"
        assert call_name(call) not in ("os.system", "os.popen", "subprocess.getoutput"), where
        assert keyword(call, "shell") in (None, "False"), f"{where}: config paths must never pass through a shell"
        if call_name(call) == "torch.load":
            assert keyword(call, "weights_only") == "True", f"{where}: torch.load needs weights_only=True"
        assert keyword(call, "trust_remote_code") != "True", f"{where}: trust_remote_code only when configured"


def test_lightning_checkpoints_resume_with_weights_only():
    fits = [call for _, call in calls_in_package() if call_name(call).endswith(".fit") and keyword(call, "ckpt_path")]
    assert fits and all(keyword(call, "weights_only") == "True" for call in fits)
