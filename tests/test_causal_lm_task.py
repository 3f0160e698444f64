"""The causal-LM task family on the tiny Llama fixture: prompt/response encoding, the response-only
loss mask, padding for training and generation, and its evaluation through experiments.llm_scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.llm_scoring import gsm8k_scores, loglikelihood, multiple_choice_correct
from experiments.tasks.base import DataValidationError
from experiments.tasks.causal_lm import LABEL_PAD_ID, CausalLMTask

FIXTURES = Path(__file__).parent / "fixtures"
DATA = FIXTURES / "llm" / "data"


def gsm8k_cfg(**extra):
    return {"name": "tiny_gsm8k", "family": "causal_lm", "eval_splits": ["test"], "template": "plain",
            "scorer": "gsm8k", "prompt_format": "Question: {question}\nAnswer:", "response_format": "{answer}",
            "until": ["Question:"], "max_new_tokens": 8,
            "dataset": {"data_files": {"train": str(DATA / "gsm8k" / "train.jsonl"),
                                       "test": str(DATA / "gsm8k" / "test.jsonl")}}, **extra}


def piqa_cfg(**extra):
    return {"name": "tiny_piqa", "family": "causal_lm", "template": "plain", "eval_type": "multiple_choice",
            "scorer": "commonsense", "commonsense_task": "piqa", "prompt_format": "Question: {goal}\nAnswer:",
            "response_format": "{gold_choice}", "choice_formats": ["{sol1}", "{sol2}"], "gold_column": "label",
            "max_new_tokens": 4,
            "dataset": {"data_files": {"train": str(DATA / "piqa" / "train.jsonl"),
                                       "validation": str(DATA / "piqa" / "validation.jsonl")}}, **extra}


@pytest.fixture(scope="module")
def llama():
    directory = FIXTURES / "llm" / "tiny_llama"
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(directory)


def test_response_only_loss_masks_exactly_the_prompt_tokens(llama):
    _, tokenizer = llama
    task = CausalLMTask(gsm8k_cfg())
    row = task.load()["train"][0]
    encoded = task.encode_example(tokenizer, row)
    prompt_ids = tokenizer("Question: " + row["question"] + "\nAnswer: ")["input_ids"]
    response_ids = tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert encoded["input_ids"] == prompt_ids + response_ids
    assert encoded["labels"] == [LABEL_PAD_ID] * len(prompt_ids) + response_ids
    everything = CausalLMTask(gsm8k_cfg(loss_on="all")).encode_example(tokenizer, row)
    assert everything["labels"] == everything["input_ids"]


def test_truncation_drops_the_prompt_start_and_keeps_the_mask_on_the_prompt(llama):
    _, tokenizer = llama
    task = CausalLMTask(gsm8k_cfg(max_length=20))
    row = task.load()["train"][0]
    full = CausalLMTask(gsm8k_cfg()).encode_example(tokenizer, row)
    cut = task.encode_example(tokenizer, row)
    assert cut["input_ids"] == full["input_ids"][-20:]
    assert cut["labels"] == full["labels"][-20:]


def test_collator_pads_right_with_ignored_labels(llama):
    _, tokenizer = llama
    task = CausalLMTask(gsm8k_cfg())
    data = task.train_dataset(tokenizer)
    rows = [data[0], data[1]]
    batch = task.collator(tokenizer)(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    short = lengths.index(min(lengths))
    assert (batch["labels"][short, min(lengths):] == LABEL_PAD_ID).all()
    model, _ = llama
    assert torch.isfinite(model(**batch).loss)


def test_left_padded_batched_generation_equals_one_by_one(llama):
    model, tokenizer = llama
    task = CausalLMTask(gsm8k_cfg())
    rows = list(task.load()["test"])[:3]
    assert len({len(tokenizer(task.render_prompt(tokenizer, r))["input_ids"]) for r in rows}) > 1
    assert task.generate(model, tokenizer, rows, 3, "cpu") == [task.generate(model, tokenizer, [r], 1, "cpu")[0] for r in rows]


def test_gsm8k_evaluation_scores_the_generations_with_the_harness_filters(llama):
    model, tokenizer = llama
    task = CausalLMTask(gsm8k_cfg())
    rows = list(task.load()["test"])
    generations = task.generate(model, tokenizer, rows, 4, "cpu")
    expected = gsm8k_scores(generations, [r["answer"] for r in rows])
    metrics = task.evaluate(model, tokenizer, 4, "cpu")
    assert metrics == {k: 100.0 * v for k, v in expected.items()}
    assert task.main_metric == "exact_match_flexible"


def test_multiple_choice_scores_by_loglikelihood_of_each_choice(llama):
    model, tokenizer = llama
    task = CausalLMTask(piqa_cfg())
    rows = list(task.load()["validation"])
    hits = [multiple_choice_correct([loglikelihood(model, tokenizer, f"Question: {r['goal']}\nAnswer:", " " + c)[0]
                                     for c in (r["sol1"], r["sol2"])], [r["sol1"], r["sol2"]], r["label"]) for r in rows]
    metrics = task.evaluate(model, tokenizer, 4, "cpu")
    assert metrics["acc"] == pytest.approx(100.0 * sum(h[0] for h in hits) / len(rows))
    assert metrics["acc_norm"] == pytest.approx(100.0 * sum(h[1] for h in hits) / len(rows))
    assert 0.0 <= metrics["acc_parsed"] <= 100.0


def test_gold_choice_is_the_training_response_of_a_multiple_choice_task(llama):
    _, tokenizer = llama
    task = CausalLMTask(piqa_cfg())
    row = task.load()["train"][0]
    encoded = task.encode_example(tokenizer, row)
    gold = row["sol1"] if row["label"] == 0 else row["sol2"]
    response = [t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != LABEL_PAD_ID]
    assert response == tokenizer(gold, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"question": "q?"}\n', encoding="utf-8")
    task = CausalLMTask(gsm8k_cfg(dataset={"data_files": {"train": str(bad), "test": str(bad)}}))
    with pytest.raises(DataValidationError, match="answer"):
        task.load()


def test_a_gold_index_out_of_range_is_refused_naming_the_row(tmp_path):
    bad = tmp_path / "validation.jsonl"
    bad.write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 2}\n', encoding="utf-8")
    cfg = piqa_cfg()
    cfg["dataset"] = {"data_files": {"train": str(DATA / "piqa" / "train.jsonl"), "validation": str(bad)}}
    with pytest.raises(DataValidationError, match=r"line 1.*'label'.*0\.\.1"):
        CausalLMTask(cfg).load()


@pytest.mark.parametrize(("cfg", "message"), [
    ({"scorer": "none"}, "task.scorer"),
    ({"template": "alpaca"}, "task.template"),
    ({"scorer": "commonsense"}, "task.commonsense_task"),
])
def test_bad_settings_are_refused_naming_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        CausalLMTask(gsm8k_cfg(**cfg))


def test_the_llm_fixtures_are_what_their_generator_writes(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_llm_fixtures", FIXTURES.parents[1] / "scripts" / "make_llm_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_all(tmp_path)
    for path in DATA.rglob("*.jsonl"):
        assert (tmp_path / path.relative_to(DATA)).read_bytes() == path.read_bytes(), path
