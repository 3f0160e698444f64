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


# ---------------------------------------------------------------------------- separate evaluation data (eval_sets)
def task_cfg(name: str) -> dict:
    """A shipped task config as a run resolves it (Hydra defaults and ${project_root:} applied)."""
    from omegaconf import OmegaConf

    from tests.conftest import compose

    cfg = compose([f"task={name}", "model=tiny_llama", "method=lora", "budget=llm_r4"])
    return OmegaConf.to_container(cfg.task, resolve=True)


def test_an_eval_set_scores_its_own_data_with_its_own_formats(llama):
    """tiny_metamathqa_gsm8k trains on MetaMathQA rows and reports GSM8K's test file, asked with PEFT's template:
    the same numbers as a GSM8K task with that prompt evaluated directly."""
    model, tokenizer = llama
    task = CausalLMTask(task_cfg("tiny_metamathqa_gsm8k"))
    assert task.load()["train"].column_names == ["query", "response", "type", "original_question"]
    assert task.eval_splits == [] and task.main_metric == "gsm8k_exact_match_flexible"
    metrics = task.evaluate(model, tokenizer, 4, "cpu")
    direct = CausalLMTask(gsm8k_cfg(prompt_format="Question: {question} Think step by step.\nAnswer:", separator="",
                                    until=list(task.eval_sets["gsm8k"].until))).evaluate(model, tokenizer, 4, "cpu")
    assert {k: metrics[f"gsm8k_{k}"] for k in direct} == direct
    assert metrics["avg"] == metrics["gsm8k_exact_match_flexible"] == metrics["avg_exact_match_flexible"]


def test_commonsense_eval_sets_report_every_set_and_the_average_of_their_parsed_accuracies(llama):
    model, tokenizer = llama
    task = CausalLMTask(task_cfg("tiny_commonsense"))
    metrics = task.evaluate(model, tokenizer, 6, "cpu")
    sets = ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
    assert list(task.eval_sets) == sets and task.main_metric == "avg"
    for metric in ("acc", "acc_norm", "acc_parsed"):
        values = [metrics[f"{name}_{metric}"] for name in sets]
        assert all(0.0 <= v <= 100.0 for v in values)
        assert metrics[f"avg_{metric}"] == pytest.approx(sum(values) / len(sets))
    assert metrics["avg"] == metrics["avg_acc_parsed"]


def test_an_eval_set_is_scored_as_the_same_task_standing_alone(llama):
    """The piqa eval set of tiny_commonsense by log-likelihood equals tiny_piqa's scoring of the same file."""
    model, tokenizer = llama
    eval_set = CausalLMTask(task_cfg("tiny_commonsense")).eval_sets["piqa"]
    eval_set.load_as_eval_set(None)
    alone = CausalLMTask(piqa_cfg(dataset={"data_files": {"train": str(DATA / "piqa" / "train.jsonl"), "validation": str(
        DATA / "commonsense" / "piqa" / "validation.jsonl")}}))
    ours, theirs = (t.evaluate_split(model, tokenizer, "validation", 6, "cpu") for t in (eval_set, alone))
    assert (ours["acc"], ours["acc_norm"]) == (theirs["acc"], theirs["acc_norm"])


def test_arc_gold_is_the_answer_keys_position_in_the_choice_labels():
    task = CausalLMTask(task_cfg("tiny_commonsense")).eval_sets["arc_challenge"]
    row = {"choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "3"}
    assert task.row_gold(row, 3) == 2
    with pytest.raises(ValueError, match="'E' is not one of choices.label"):
        task.row_gold({**row, "answerKey": "E"}, 3)


def test_hellaswag_and_winogrande_rows_are_preprocessed_as_the_harness_does():
    from experiments.tasks.causal_lm import PREPROCESSORS

    hella = PREPROCESSORS["hellaswag"][1]({"activity_label": "Baking", "ctx_a": "A man [header] mixes flour.",
                                          "ctx_b": "he [title] adds eggs", "endings": [" stirs [step] it. ", "x"],
                                          "label": "1"})
    assert hella == {"query": "Baking: A man mixes flour. He. adds eggs", "choices": ["stirs it.", "x"], "gold": 1}
    wino = PREPROCESSORS["winogrande"][1]({"sentence": "Ann gave Bo the cup because _ was thirsty.", "option1": "Ann",
                                           "option2": "Bo", "answer": "2"})
    assert wino["contexts"] == ["Ann gave Bo the cup because Ann", "Ann gave Bo the cup because Bo"]
    assert (wino["continuation"], wino["gold"]) == ("was thirsty.", 1)


def test_winogrande_scores_each_filled_context_before_the_one_continuation(llama):
    model, tokenizer = llama
    eval_set = CausalLMTask(task_cfg("tiny_commonsense")).eval_sets["winogrande"]
    eval_set.load_as_eval_set(None)
    rows = list(eval_set.load()["validation"])
    hits = [multiple_choice_correct([loglikelihood(model, tokenizer, c, " " + r["continuation"])[0] for c in r["contexts"]],
                                    r["contexts"], r["gold"])[0] for r in rows]
    metrics = eval_set.evaluate_split(model, tokenizer, "validation", 6, "cpu")
    assert metrics["acc"] == pytest.approx(100.0 * sum(hits) / len(rows))


def test_llm_adapters_instructions_are_rebuilt_from_the_hub_columns():
    """The instructions of LLM-Adapters' dataset/<task>/test.json (items quoted in public code), from the columns."""
    from experiments.tasks.causal_lm import commonsense_instruction

    assert commonsense_instruction("piqa", "Make outdoor pillow.", ["Blow into tin can and tie with rubber band.",
                                                                    "Blow into trash bag and tie with rubber band."]) == (
        "Please choose the correct solution to the question: Make outdoor pillow.\n\nSolution1: Blow into tin can and "
        "tie with rubber band.\n\nSolution2: Blow into trash bag and tie with rubber band.\n\nAnswer format: "
        "solution1/solution2")
    assert commonsense_instruction("openbookqa", "A cactus stem is used to store", ["fruit", "liquid", "food", "spines"]) == (
        "Please choose the correct answer to the question: A cactus stem is used to store\n\nAnswer1: fruit Answer2: "
        "liquid Answer3: food Answer4: spines\n\nAnswer format: answer1/answer2/answer3/answer4")
    assert commonsense_instruction("boolq", "does ethanol take more energy make that produces?", []) == (
        "Please answer the following question with true or false, question: does ethanol take more energy make that "
        "produces?\n\nAnswer format: true/false")


@pytest.mark.parametrize(("entry", "message"), [
    ({"split": "test", "dataset": {"path": "x"}, "promt_format": "{q}"}, r"task\.eval_sets\.gsm8k has unknown key\(s\) \['promt_format'\]"),
    ({"dataset": {"path": "x"}}, r"task\.eval_sets\.gsm8k needs \['split'\]"),
    ({"split": "test", "dataset": {"path": "x"}, "scorer": "bleu"}, r"task\.eval_sets\.gsm8k\.scorer must be one of"),
    ({"split": "test", "dataset": {"path": "x"}, "scorer": "commonsense"}, r"task\.eval_sets\.gsm8k\.commonsense_task"),
    ({"split": "test", "dataset": {"path": "x"}, "scorer": "gsm8k", "main_metric": "acc"},
     r"task\.eval_sets\.gsm8k\.main_metric 'acc' is not one of its metrics \['exact_match_strict', 'exact_match_flexible'\]"),
])
def test_a_bad_eval_set_is_refused_naming_the_entry_and_key(entry, message):
    from experiments.tasks.config import TaskConfigError

    with pytest.raises(TaskConfigError, match=message):
        CausalLMTask.parse_config({**task_cfg("tiny_metamathqa_gsm8k"), "eval_sets": {"gsm8k": entry}})


def test_eval_splits_and_eval_sets_exclude_each_other():
    with pytest.raises(ValueError, match="task.eval_splits and task.eval_sets exclude each other"):
        CausalLMTask({**task_cfg("tiny_metamathqa_gsm8k"), "eval_splits": ["test"]})


def test_an_eval_set_split_missing_from_its_files_names_the_set():
    cfg = task_cfg("tiny_metamathqa_gsm8k")
    cfg["eval_sets"]["gsm8k"]["split"] = "validation"
    with pytest.raises(DataValidationError, match=r"tiny_metamathqa_gsm8k\.gsm8k.*'validation' not found"):
        CausalLMTask(cfg).load()


# ---------------------------------------------------------------------------- chat template: what was used
def test_whether_the_chat_template_was_used_is_reported(llama):
    _, tokenizer = llama
    plain = CausalLMTask(gsm8k_cfg(template="chat"))
    plain.train_dataset(tokenizer)
    assert plain.ran() == {"prompt_template": "plain"}  # asked for, but this tokenizer has none
    chat_tokenizer = AutoTokenizer.from_pretrained(FIXTURES / "llm" / "tiny_llama")
    chat_tokenizer.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
    chat = CausalLMTask(gsm8k_cfg(template="chat"))
    data = chat.train_dataset(chat_tokenizer)
    assert chat.ran() == {"prompt_template": "chat"}
    assert chat_tokenizer.decode(data[0]["input_ids"]).count("<|assistant|>") == 1


def test_an_eval_set_file_is_part_of_the_runs_content_identity(tmp_path):
    """Editing an eval set's file changes the run's content (experiments.content: Task.more_datasets)."""
    import shutil

    from experiments.content import content_of

    cfg = task_cfg("tiny_metamathqa_gsm8k")
    test_file = tmp_path / "test.jsonl"
    shutil.copy(DATA / "gsm8k" / "test.jsonl", test_file)
    cfg["eval_sets"]["gsm8k"]["dataset"]["data_files"] = {"test": str(test_file)}
    before = content_of({"task": cfg})["more_data"]["eval_sets.gsm8k"]["test"]
    test_file.write_text(test_file.read_text(encoding="utf-8").replace("#### ", "#### 1"), encoding="utf-8")
    after = content_of({"task": cfg})["more_data"]["eval_sets.gsm8k"]["test"]
    assert before["sha256"] != after["sha256"]


def test_prefetch_lists_every_eval_set_at_its_pinned_revision():
    """``make prefetch`` fetches a task by loading it (its eval sets included) and lists each data set it reads."""
    from omegaconf import OmegaConf

    from experiments.prefetch import Item, _dataset_label, revision_text

    task = task_cfg("metamathqa_gsm8k")
    item = Item("dataset", _dataset_label(task), None, OmegaConf.to_yaml(task))
    assert item.label + revision_text(item, resolved=False) == (
        "meta-math/MetaMathQA @ aa4f34d3d2d3231299b5b03d9b3e5a20da45aa18; "
        "eval_sets.gsm8k: openai/gsm8k (main) @ 740312add88f781978c0658806c59bc2815b9866")


def test_a_bad_row_of_a_url_data_file_is_reported_by_its_row():
    """commonsense trains on a commit-pinned URL: an error there names the row (no local lines to count)."""
    from experiments.tasks.base import SplitRef

    url = "https://raw.githubusercontent.com/o/r/0123/ft-training_set/commonsense_170k.json"
    err = SplitRef(f"file '{url}'", "train", (url,)).error(7, "output", "is empty")
    assert str(err) == f"file '{url}', split 'train', row 7 (0-based), field 'output': is empty"
