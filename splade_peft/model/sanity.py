"""The backbone sanity check: before a decoder job trains, its backbone (no adapter yet) answers a few fixed
questions through the job's own chat template and tokenisation. A broken template (one that drops the
question, or leads the model to answer with nothing or with the prompt again) silently ruins the embeddings
a retriever is trained from; here it stops the job instead.

The answers are logged and recorded in results.json (`backbone_check`); whether an answer names the expected
word is recorded too, but only empty or echoed answers stop the job: a small model may answer wrongly through
a good template.
"""

import logging
from dataclasses import asdict, dataclass

import torch

from splade_peft.device import on_job_device
from splade_peft.errors import ConfigError

log = logging.getLogger(__name__)

QUESTIONS = (
    ("What is the capital of France?", "paris"),
    ("How many days are there in a week?", "seven"),
    ("What colour is the sky on a clear day?", "blue"),
)
ANSWER_TOKENS = 24


@dataclass(frozen=True)
class Answer:
    question: str
    prompt: str
    answer: str
    expected: str

    @property
    def empty(self) -> bool:
        return not self.answer.strip()

    @property
    def echoes(self) -> bool:
        """The answer repeats the question, or the prompt's end, instead of answering it."""
        said = " ".join(self.answer.lower().split())
        return bool(said) and (self.question.lower() in said or said in " ".join(self.prompt.lower().split()))

    @property
    def broken(self) -> bool:
        return self.empty or self.echoes

    def record(self) -> dict:
        return {**asdict(self), "names_expected": self.expected in self.answer.lower(), "broken": self.broken}


def prompt_for(tokenizer, question: str, chat_template: str | None) -> str:
    """The question as the job's template renders it (model.chat_template, else the tokenizer's own)."""
    template = chat_template or tokenizer.chat_template
    if not template:
        return question  # a base model without a template is asked the bare question
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


@torch.inference_mode()
def ask(model, tokenizer, prompt: str) -> str:
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    output = model.generate(**encoded, max_new_tokens=ANSWER_TOKENS, do_sample=False, pad_token_id=pad)
    return tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)


def check_backbone(model, tokenizer, chat_template: str | None, trainer_cfg=None) -> list[dict]:
    """Ask QUESTIONS, on the job's device and precision (`trainer_cfg`, the trainer section; the CPU without
    one); stop the job when the template drops a question or most answers are empty or echoes."""
    prompts = {question: prompt_for(tokenizer, question, chat_template) for question, _ in QUESTIONS}
    for question, prompt in prompts.items():
        if question not in prompt:
            raise ConfigError("model.chat_template", f"renders the question {question!r} as {prompt!r}: the "
                              "template drops the text it is given", "fix the template, or set model.chat_template=null "
                              "to use the tokenizer's (model.sanity_check=false skips this check)")
    answers = []
    with on_job_device(model, trainer_cfg or {}):
        for question, expected in QUESTIONS:
            answers.append(Answer(question, prompts[question], ask(model, tokenizer, prompts[question]), expected))
            log.info("backbone check: %r -> %r", question, answers[-1].answer)
    broken = [a for a in answers if a.broken]
    if len(broken) * 2 > len(answers):
        example = broken[0]
        raise ConfigError("model.chat_template", f"the backbone answers {len(broken)} of {len(answers)} fixed questions "
                          f"with {'nothing' if example.empty else 'the prompt again'} (e.g. {example.question!r} -> "
                          f"{example.answer!r}): the template or tokenisation is broken", "fix model.chat_template or the "
                          "tokenizer (model.sanity_check=false skips this check)")
    return [a.record() for a in answers]
