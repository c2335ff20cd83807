"""The job's device: where trainer.accelerator/devices put training, and where evaluation puts the
encoder afterwards (Lightning's teardown leaves a trained module on the CPU)."""

import dataclasses

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM

import splade_peft.evaluation.retrieval as retrieval
from tests.helpers import ITEMS, LORA, LOSS, OPTIM, tiny_tokenizer
from splade_peft.errors import ConfigError
from splade_peft.memory import peak_memory_mb, reset_peak_memory
from splade_peft.model.backbones import load_backbone
from splade_peft.model.query_table import QueryWeightTable
from splade_peft.model.variants import SparseEncoder
from splade_peft.data.collection import Collection
from splade_peft.data.pairs import TrainingCollator
from splade_peft.index.config import SEARCH_ENGINES
from splade_peft.device import inference_precision, job_device, place, set_up_job_device
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.training.module import SpladeModule

CUDA = torch.cuda.is_available()
# The accelerator this machine can train on: the test below is about the GPU where there is one.
TRAINER = OmegaConf.create({"accelerator": "gpu" if CUDA else "cpu", "devices": 1, "precision": "bf16-mixed" if CUDA else "32-true"})


def test_cpu_unless_a_gpu_is_asked_for_and_there():
    assert job_device(OmegaConf.create({"accelerator": "cpu", "devices": 2})) == torch.device("cpu")
    assert job_device({}) == torch.device("cpu")
    assert job_device({"accelerator": "auto"}).type == ("cuda" if CUDA else "cpu")


def test_a_gpu_asked_for_and_not_there_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("gpu", "cuda"):
        with pytest.raises(ConfigError, match=f"^config key 'trainer.accelerator': is {accelerator} and no CUDA device "
                                              "is visible here -- use trainer=cpu") as refused:
            set_up_job_device(OmegaConf.create({"accelerator": accelerator, "devices": 1}))
        assert "\n" not in str(refused.value)
    assert job_device({"accelerator": "auto"}) == torch.device("cpu")  # auto falls back to the CPU


@pytest.fixture
def four_gpus(monkeypatch):
    """A machine with four visible GPUs, not launched by torchrun or SLURM; records torch.cuda.set_device."""
    for variable in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_LOCALID",
                     "SLURM_JOB_NAME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


@pytest.mark.parametrize("devices,first,second", [
    (2, 0, 1), ([2, 3], 2, 3), ("1,3", 1, 3), (-1, 0, 1), ("auto", 0, 1), (1, 0, None),
])
def test_each_process_works_on_the_gpu_lightning_gives_its_rank(four_gpus, monkeypatch, devices, first, second):
    """A count n is GPUs 0..n-1, a list names them; the process Lightning's DDP launcher starts with LOCAL_RANK=1
    (or SLURM with SLURM_LOCALID=1) trains on the second of them, not on the first beside rank zero."""
    trainer = OmegaConf.create({"accelerator": "gpu", "devices": devices})
    assert job_device(trainer) == torch.device("cuda", first)
    if second is None:
        return
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert job_device(trainer) == torch.device("cuda", second)
    monkeypatch.delenv("LOCAL_RANK")
    for variable, value in (("SLURM_NTASKS", "2"), ("SLURM_NTASKS_PER_NODE", "2"), ("SLURM_LOCALID", "1")):
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert job_device(trainer) == torch.device("cuda", second)


def test_gpus_this_machine_lacks_are_refused_naming_trainer_devices(four_gpus):
    for devices in ([4], 5, 0):
        with pytest.raises(ConfigError, match="^config key 'trainer.devices': .* visible here \\[0, 1, 2, 3\\]"):
            job_device(OmegaConf.create({"accelerator": "cuda", "devices": devices}))


@pytest.fixture
def tf32_off():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_a_job_starts_on_its_ranks_gpu_with_tf32_matmuls(four_gpus, tf32_off, monkeypatch):
    """The rank's GPU becomes the current one (so that memory statistics and `.cuda()` do not reach GPU 0 from
    rank 1), and float32 matmuls run in TF32 for training as for inference."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert set_up_job_device(OmegaConf.create({"accelerator": "gpu", "devices": [0, 2]})) == torch.device("cuda", 2)
    assert four_gpus == [torch.device("cuda", 2)]
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_a_cpu_job_leaves_cuda_and_float32_matmuls_alone(four_gpus, tf32_off):
    assert set_up_job_device(OmegaConf.create({"accelerator": "cpu", "devices": 1})) == torch.device("cpu")
    assert four_gpus == [] and not torch.backends.cuda.matmul.allow_tf32


def test_memory_statistics_leave_cuda_alone_in_a_process_that_has_not_used_it(monkeypatch):
    """A CPU job on a GPU machine, or a rank before it has picked its GPU, would open a context on GPU 0."""
    touched = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *device: touched.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *device: touched.append("read") or 0)
    reset_peak_memory()
    assert "peak_cuda_mb" not in peak_memory_mb() and touched == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    reset_peak_memory()
    assert peak_memory_mb()["peak_cuda_mb"] == 0 and touched == ["reset", "read"]


def tiny_splade(tokenizer) -> SpladeEncoder:
    torch.manual_seed(0)
    return SpladeEncoder(BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32)))


def test_placing_an_encoder_moves_all_of_it():
    encoder = SparseEncoder(QueryWeightTable(torch.ones(len(tiny_tokenizer())), [0]), tiny_splade(tiny_tokenizer()))
    assert place(encoder, torch.device("meta")) == torch.device("meta")
    assert {p.device.type for p in encoder.parameters()} | {b.device.type for b in encoder.buffers()} == {"meta"}


def test_beside_a_k_bit_language_model_the_rest_of_the_encoder_joins_its_device(base_folder, tmp_path, monkeypatch):
    """bitsandbytes placed the 4-bit LM when it loaded (device_map); it is not moved again, and the query table
    and sparsifiers go where it is, whatever device was asked for: one device for every module."""
    masked_lm, _ = load_backbone(OmegaConf.create({"name_or_path": str(base_folder), "random_init": None}), tmp_path, "4bit")
    adapted = wrap_with_adapter(masked_lm, OmegaConf.merge(LORA, {"quantization": "4bit"}))
    encoder = SparseEncoder(QueryWeightTable(torch.ones(masked_lm.config.vocab_size), [0]), SpladeEncoder(adapted))
    language_model = set(adapted.modules())
    moved = []
    original_to = torch.nn.Module.to

    def recorded_to(module, *arguments, **keywords):
        moved.append(module)
        return original_to(module, *arguments, **keywords)

    monkeypatch.setattr(torch.nn.Module, "to", recorded_to)
    assert place(encoder, torch.device("meta")) == torch.device("cpu")  # where the 4-bit LM is
    assert not language_model & set(moved) and encoder.query_encoder in moved
    assert {p.device.type for p in encoder.parameters()} == {"cpu"}


def test_the_trained_encoder_is_evaluated_on_the_training_device(tmp_path, monkeypatch):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = SpladeEncoder(wrap_with_adapter(backbone, LORA))
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **TRAINER)
    encoder.train()
    trainer.fit(SpladeModule(encoder, LOSS, OPTIM), DataLoader(ITEMS, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16)))

    seen = {}

    def record_device(encoder, *arguments, **keywords):
        seen["device"] = next(encoder.parameters()).device
        seen["autocast"] = torch.is_autocast_enabled("cuda")
        return {}

    lucene = SEARCH_ENGINES.get("lucene")
    monkeypatch.setitem(SEARCH_ENGINES.variants, "lucene", dataclasses.replace(lucene, implementation=record_device))
    settings = retrieval.EvaluationSettings(index=OmegaConf.create({"name": "lucene", "quantization": 100}), trainer=TRAINER,
                                            encoder={"name": "splade"}, query_max_length=8, doc_max_length=16, k=10,
                                            search_threads=1)
    collection = Collection("toy", "dev", {"d0": "cat"}, {"q0": "cat"}, {"q0": {"d0": 1}}, "toy")
    retrieval.evaluate_trained(encoder, tokenizer, {"toy": collection}, settings, tmp_path, "model")
    assert seen["device"].type == job_device(TRAINER).type == trainer.strategy.root_device.type
    assert seen["autocast"] == CUDA  # bf16-mixed training, bf16 encoding


def test_no_autocast_on_the_cpu_or_in_full_precision(tf32_off):
    assert not isinstance(inference_precision(TRAINER, torch.device("cpu")), torch.autocast)
    assert not isinstance(inference_precision({"precision": "32-true"}, torch.device("cuda")), torch.autocast)
