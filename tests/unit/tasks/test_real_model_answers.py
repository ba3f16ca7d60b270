"""Answer extraction on the free text real models write, and the prompt formats around it."""

from __future__ import annotations

import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.tasks import make_task
from mecharule.tasks.builtin.arithmetic import parse_answer
from mecharule.tasks.builtin.hans_nli import parse_nli_answer
from mecharule.tasks.formats import chat_prompt, draw_shots, format_task_prompts

# The answers SmolLM2-135M-Instruct gave to raw prompts (issue 10), with their truths.
SMOLLM2_RAW = [
    ("1+2=", 3, "3, so the equation is"),
    ("0*8=", 0, "128, which is"),
    ("66+12=", 78, "13, which is the"),
]


@pytest.mark.parametrize(("prompt", "truth", "answer"), SMOLLM2_RAW)
def test_reference_rule_on_smollm2_free_text(prompt, truth, answer):
    del prompt
    task = make_task("arithmetic", {"prompt_format": "raw"})
    assert task.answer_rule == "single_number"
    row = pd.DataFrame({"truth": [truth]})
    assert task.score(row, [answer]).tolist() == [answer.startswith(f"{truth},")]


@pytest.mark.parametrize(
    ("text", "single", "first", "last", "exact"),
    [
        ("3, so the equation is", 3, 3, 3, None),
        ("3, so the equation is 3", None, 3, 3, None),
        ("23 * 45 = 1,035", None, 23, 1035, None),
        ("1035", 1035, 1035, 1035, 1035),
        ("-12 apples", -12, -12, -12, None),
        ("3.5", None, None, None, None),
        ("1035.0", 1035, 1035, 1035, None),
        ("no idea", None, None, None, None),
        ("", None, None, None, None),
    ],
)
def test_arithmetic_answer_rules(text, single, first, last, exact):
    assert parse_answer(text, "single_number") == single
    assert parse_answer(text, "first_number") == first
    assert parse_answer(text, "last_number") == last
    assert parse_answer(text, "exact") == exact


def test_answer_rule_defaults_follow_the_format_and_bad_values_fail():
    assert make_task("arithmetic", {"prompt_format": "chat"}).answer_rule == "last_number"
    assert make_task("arithmetic", {"prompt_format": "fewshot"}).stop_strings == ("\n",)
    assert make_task("arithmetic").stop_strings == ()
    with pytest.raises(ConfigError, match="answer_rule"):
        make_task("arithmetic", {"answer_rule": "closest"})
    with pytest.raises(ConfigError, match="prompt_format"):
        make_task("arithmetic", {"prompt_format": "json"})
    with pytest.raises(ConfigError, match="does not support"):
        make_task("bon_jailbreak", {"prompt_format": "fewshot"})


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (" E", "E"),
        (" N", "N"),
        ("Yes", "E"),
        ("yes, it does", "E"),
        ("No, it does not", "N"),
        ("True.", "E"),
        ("false", "N"),
        ("Contradiction", "N"),
        ("neutral", "N"),
        ("entailment", "E"),
        ("non-entailment", "N"),
        ("The premise does not entail the hypothesis", "N"),
        ("the tailor praised", None),  # SmolLM2 continuing a raw HANS premise
        ("", None),
    ],
)
def test_hans_verdict_words(text, label):
    assert parse_nli_answer(text) == label


def test_hans_parse_column_marks_unparsable_answers():
    task = make_task("hans_nli", {"prompt_format": "chat", "n_examples": 20})
    assert task.parse_answers(["Yes.", "the tailor praised"]) == ["E", None]


def test_bon_parse_reads_refusals_in_free_text():
    task = make_task("bon_jailbreak", {"prompt_format": "chat"})
    parsed = task.parse_answers(["I'm sorry, but I can't help with that.", "Sure! Step one is"])
    assert parsed == ["refusal", "other"]


def test_fewshot_shots_are_never_evaluated_and_prefix_every_prompt():
    task = make_task("arithmetic", {"prompt_format": "fewshot", "n_shots": 3, "max_operand": 9})
    table = task.prompts()
    shots, rest = draw_shots(table, 3, seed=0)
    assert len(shots) == 3 and len(rest) == len(table) - 3
    assert not set(shots["prompt"]) & set(rest["prompt"])
    again, _ = draw_shots(table, 3, seed=0)
    assert again["prompt"].tolist() == shots["prompt"].tolist()
    formatted = format_task_prompts(task, rest.head(4), tokenizer=None, shots=shots)
    context = "".join(f"{p}{t}\n" for p, t in zip(shots["prompt"], shots["truth"], strict=True))
    for question, prompt in zip(formatted["question"], formatted["prompt"], strict=True):
        assert prompt == context + question
    with pytest.raises(DataError, match="leaves no prompt"):
        draw_shots(table.head(3), 3, seed=0)


class _Template:
    """A stand-in tokenizer with a chat template that writes BOS and a tokenizer that adds it."""

    chat_template = "{{ bos_token }}<user>{{ m }}</user>"
    bos_token = "<s>"
    bos_token_id = 1

    def __init__(self, adds_bos: bool) -> None:
        self.adds_bos = adds_bos

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return f"<s><user>{messages[0]['content']}</user><assistant>"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if self.adds_bos else []) + [5]}


def test_chat_prompt_never_doubles_bos():
    assert chat_prompt(_Template(adds_bos=True), "hi") == "<user>hi</user><assistant>"
    assert chat_prompt(_Template(adds_bos=False), "hi") == "<s><user>hi</user><assistant>"


def test_chat_format_needs_a_template():
    class NoTemplate:
        chat_template = None

    with pytest.raises(ConfigError, match="chat template"):
        chat_prompt(NoTemplate(), "hi")
