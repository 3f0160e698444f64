"""PEFT's MetaMathQA answer scoring (``peft_accuracy``, huggingface/peft method_comparison/MetaMathQA/utils.py
``parse_answer``, ``convert_to_decimal``, ``get_accuracy``) beside lm-evaluation-harness's two GSM8K metrics, on
hand-made generations where they agree and where they differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.llm_scoring import gsm8k_scores
from experiments.metrics import peft_accuracy, peft_answer_value, peft_parse_answer
from experiments.tasks.base import DataValidationError
from experiments.tasks.causal_lm import CausalLMTask
from tests.test_causal_lm_task import DATA, gsm8k_cfg, task_cfg

# (generation, reference, PEFT right, harness strict right, harness flexible right): worked out by hand from
# the rules each documents (docs/llm.md), not by running either implementation.
CASES = [
    # A MetaMathQA-trained model's answer: PEFT and the flexible (last number) extraction agree; strict needs "#### ".
    ("Fay has 18 + 24 = 42 stamps.\nThe answer is: 42", "Fay ... stamps.\n#### 42", True, False, True),
    ("Ann has 48 books.\n#### 48", "Ann has 10 + 38 = <<10+38=48>>48 books.\n#### 48", True, True, True),
    ("The answer is: 50%", "#### 50", True, False, True),  # both drop the percent sign
    # PEFT keeps the first line after the marker; the flexible extraction reads the last number of the text.
    ("The answer is: 42\nQuestion 2: 7 apples", "#### 42", True, False, False),
    ("The answer is: 1/2", "#### 0.5", True, False, False),  # PEFT divides a fraction
    ("The answer is: 18.0", "#### 18", True, False, False),  # PEFT compares numbers, the harness strings
    # The harness removes thousands separators; PEFT's Decimal cannot read "1,000" and compares the text.
    ("The answer is: $1,000.", "#### 1000", False, False, True),
    ("She has 18 apples.", "#### 18", False, False, True),  # no marker: PEFT reads nothing
    # PEFT takes the first marker of its list the text contains, "The answer is: " before "#### "; strict the first "#### ".
    ("#### 7\nThe answer is: 8", "#### 8", True, False, True),
]


@pytest.mark.parametrize(("generation", "reference", "peft", "strict", "flexible"), CASES)
def test_peft_accuracy_and_the_harness_gsm8k_metrics_on_hand_made_cases(generation, reference, peft, strict, flexible):
    assert peft_accuracy([generation], [reference]) == (100.0 if peft else 0.0)
    harness = gsm8k_scores([generation], [reference])
    assert (harness["exact_match_strict"], harness["exact_match_flexible"]) == (float(strict), float(flexible))


def test_peft_accuracy_is_the_percent_of_right_answers_over_all_cases():
    generations, references = [c[0] for c in CASES], [c[1] for c in CASES]
    assert peft_accuracy(generations, references) == pytest.approx(100.0 * 7 / 9)


def test_peft_parse_answer_follows_its_documented_rules():
    assert peft_parse_answer("... $4^2 = \\boxed{16}$.The answer is: 16") == "16"
    assert peft_parse_answer("The answer is 12!\n") == "12"
    assert peft_parse_answer("The final answer is: $30.") == "30"
    assert peft_parse_answer("The answer is: 3\nThe answer is: 4\nmore") == "4"  # the marker's last occurrence
    assert peft_parse_answer("The answer is: \\frac{1}{2}") == "\\frac{1}{2}"
    assert peft_parse_answer("no answer here") is None
    # Numbers compare as PEFT's Decimal then float: a fraction equals its decimal expansion, text stays text.
    assert peft_answer_value("20/35") == peft_answer_value("0.5714285714285714")
    assert peft_answer_value("1/0") == "1/0" and peft_answer_value("1/2/3") == "1/2/3"
    assert peft_answer_value("\\frac{1}{2}") == "\\frac{1}{2}" and peft_answer_value(None) is None


def test_a_reference_without_an_answer_marker_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="has no answer marker PEFT reads"):
        peft_accuracy(["The answer is: 3"], ["3"])


def test_metamathqa_gsm8k_reports_peft_accuracy_beside_the_harness_metrics():
    """The GSM8K eval set of metamathqa_gsm8k (and its tiny twin) is scored by both; the main metric is unchanged."""
    for name in ("metamathqa_gsm8k", "tiny_metamathqa_gsm8k"):
        task = CausalLMTask(task_cfg(name))
        assert task.eval_sets["gsm8k"].metric_names() == ["exact_match_strict", "exact_match_flexible", "peft_accuracy"]
        assert task.main_metric == "gsm8k_exact_match_flexible"


def test_a_gsm8k_peft_reference_peft_cannot_read_is_refused_naming_the_file_line(tmp_path: Path):
    test_file = tmp_path / "test.jsonl"
    lines = (DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace("#### ", "answer ")
    test_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    files = {"train": str(DATA / "gsm8k" / "train.jsonl"), "test": str(test_file)}
    task = CausalLMTask(gsm8k_cfg(scorer="gsm8k_peft", dataset={"data_files": files}))
    with pytest.raises(DataValidationError, match=r"line 3 .*field 'answer': no answer PEFT's parse_answer reads"):
        task.load()
    CausalLMTask(gsm8k_cfg(dataset={"data_files": files})).load()  # the harness's scorer reads any reference
