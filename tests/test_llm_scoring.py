"""LLM scoring equals lm-evaluation-harness 0.4.13 on fixed cases (values it computed itself:
scripts/llm_scoring_reference.py -> tests/fixtures/llm_scoring_reference.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.llm_scoring import (
    commonsense_parse,
    gsm8k_scores,
    loglikelihood,
    multiple_choice_correct,
    regex_extract,
    truncate_at,
)

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "llm_scoring_reference.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", REFERENCE["gsm8k"], ids=lambda c: c["generation"][:20])
def test_gsm8k_strict_and_flexible_equal_the_harness(case):
    scores = gsm8k_scores([case["generation"]], [case["reference"]])
    assert scores == {"exact_match_strict": case["strict-match"], "exact_match_flexible": case["flexible-extract"]}


def test_gsm8k_reference_cases_cover_both_outcomes_of_each_filter():
    """The stored cases discriminate: each filter is right on some and wrong on others, and they disagree."""
    strict = [c["strict-match"] for c in REFERENCE["gsm8k"]]
    flexible = [c["flexible-extract"] for c in REFERENCE["gsm8k"]]
    assert set(strict) == set(flexible) == {0.0, 1.0}
    assert strict != flexible


def test_gsm8k_scores_average_over_items():
    cases = REFERENCE["gsm8k"]
    scores = gsm8k_scores([c["generation"] for c in cases], [c["reference"] for c in cases])
    assert scores["exact_match_strict"] == pytest.approx(sum(c["strict-match"] for c in cases) / len(cases))
    assert scores["exact_match_flexible"] == pytest.approx(sum(c["flexible-extract"] for c in cases) / len(cases))


@pytest.mark.parametrize("case", REFERENCE["multiple_choice"], ids=lambda c: str(c["loglikelihoods"]))
def test_multiple_choice_acc_and_acc_norm_equal_the_harness(case):
    acc, acc_norm = multiple_choice_correct(case["loglikelihoods"], case["choices"], case["gold"])
    assert (float(acc), float(acc_norm)) == (case["acc"], case["acc_norm"])


@pytest.fixture(scope="module")
def tiny_llama():
    directory = FIXTURES / "llm" / "tiny_llama"
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("case", REFERENCE["loglikelihood"], ids=lambda c: f"{c['context'][:12]}|{c['continuation']}")
def test_loglikelihood_equals_the_harness_hflm(case, tiny_llama):
    model, tokenizer = tiny_llama
    value, greedy = loglikelihood(model, tokenizer, case["context"], case["continuation"])
    assert value == pytest.approx(case["loglikelihood"], abs=1e-4)
    assert greedy is case["is_greedy"]


def test_truncate_at_cuts_at_the_earliest_stop_string():
    assert truncate_at("a #### 1\nQuestion: b</s>c", ("</s>", "Question:")) == "a #### 1\n"
    assert truncate_at("nothing to cut", ("Question:",)) == "nothing to cut"


def test_regex_extract_falls_back_when_nothing_matches():
    assert regex_extract("no digits", r"#### (\d+)") == "[invalid]"
    assert regex_extract("1 and 22 and 333", r"(\d+)", group_select=-1) == "333"


@pytest.mark.parametrize(("task", "generation", "parsed"), [
    ("boolq", "The answer is True because false premises", "true"),
    ("piqa", "the correct answer is Solution2", "solution2"),
    ("arc_challenge", "answer3 then answer1", "answer3"),
    ("hellaswag", "I pick ending4.", "ending4"),
    ("winogrande", "no option here", ""),
])
def test_commonsense_parse_takes_the_first_answer_word_lower_cased(task, generation, parsed):
    assert commonsense_parse(task, generation) == parsed


def test_commonsense_parse_refuses_an_unknown_task():
    with pytest.raises(ValueError, match="boolq"):
        commonsense_parse("boolk", "true")
