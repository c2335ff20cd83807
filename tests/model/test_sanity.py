"""The backbone sanity check (model/sanity.py): a decoder answers fixed questions through the job's chat
template before training; a template that drops the question, or answers that are empty or echo the prompt,
stop the job with one line naming model.chat_template."""

import pytest
import torch

from splade_peft.errors import ConfigError
from splade_peft.model.sanity import QUESTIONS, Answer, check_backbone, prompt_for
from tests.helpers import offline_checkpoint, run_cli

SMOLLM2 = offline_checkpoint("smollm2-135m")
needs_smollm2 = pytest.mark.skipif(not (SMOLLM2 / "config.json").exists(), reason="make smollm2 has not run")


def test_an_empty_or_echoed_answer_is_broken_and_a_wrong_one_is_not():
    assert Answer("Q?", "<user>Q?<assistant>", "  ", "x").broken
    assert Answer("What is 2+2?", "user: What is 2+2?\nassistant:", "What is 2+2? What is", "4").echoes
    wrong = Answer("What is 2+2?", "user: What is 2+2?\nassistant:", "It is five.", "4")
    assert not wrong.broken and not wrong.record()["names_expected"]


class EchoingModel(torch.nn.Module):
    """Generates its prompt again: what a model fed a broken template tends to do."""
    device = torch.device("cpu")

    def generate(self, input_ids, max_new_tokens, **_):
        return torch.cat([input_ids, input_ids[:, -max_new_tokens:]], dim=1)


@needs_smollm2
def test_a_model_that_echoes_its_prompt_is_refused():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    with pytest.raises(ConfigError, match="^config key 'model.chat_template': the backbone answers 3 of 3"):
        check_backbone(EchoingModel(), tokenizer, None)


@needs_smollm2
def test_a_template_that_drops_the_question_is_refused():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    assert QUESTIONS[0][0] in prompt_for(tokenizer, QUESTIONS[0][0], None)  # the tokenizer's own template keeps it
    with pytest.raises(ConfigError, match="drops the text it is given"):
        check_backbone(EchoingModel(), tokenizer, "{{ bos_token }}assistant:")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_answers_through_its_template_and_a_job_with_a_broken_one_stops(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    answers = check_backbone(AutoModelForCausalLM.from_pretrained(SMOLLM2), tokenizer, None)
    assert not any(a["broken"] for a in answers) and sum(a["names_expected"] for a in answers) >= 2
    done = run_cli(tmp_path / "job", "experiment=smoke", "model=smollm2", "encoder=dense", "index=faiss", "logger=csv",
                   "model.chat_template=assistant:")
    assert done.returncode != 0 and "config key 'model.chat_template'" in done.stderr + done.stdout
    assert not (tmp_path / "job" / "adapter").exists()
