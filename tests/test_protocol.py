"""protocol=paper|heldout: the carved validation split, selection on it, what a run reports, identity, lr search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.evaluate import reevaluate
from experiments.identity import identity_block
from experiments.lr_search import SELECTED_LR_ENV, select, trial_from_record, write_selection
from experiments.protocol import best_eval, get_protocol
from experiments.results import read_result
from experiments.runner import PROJECT_ROOT, ConfigError, register_resolvers, resolve, run, run_identity_block
from experiments.spec import dirname_overrides, run_identity
from experiments.tasks import DataValidationError, build_task
from experiments.tasks.heldout import HELDOUT_SPLIT, HeldoutSpec, heldout_rows
from experiments.training import eval_score
from experiments.weights import WEIGHT_FILES
from tests.conftest import compose

register_resolvers()


_compose = compose


def _cfg(out: Path, task: str = "tiny_glue_rte", method: str = "lora", *extra: str):
    budget = "qa_0.16" if "squad" in task else "glue_0.3m"
    return _compose([f"task={task}", "model=tiny_deberta", f"method={method}", f"budget={budget}",
                     f"output_root={out}", "trainer.progress=false", *extra])


def _loaded(cfg):
    """The task of ``cfg`` as the runner prepares it, its splits loaded."""
    task = build_task(OmegaConf.to_container(cfg.task, resolve=True))
    resolve(cfg).protocol.prepare(task)
    return task.load(), task


def _rows(dataset) -> list[str]:
    return [json.dumps(row, sort_keys=True) for row in dataset]


def _file_rows(path: str) -> list[str]:
    return [json.dumps(json.loads(line), sort_keys=True) for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------ the carved split
@pytest.mark.parametrize("task", ["tiny_glue_rte", "tiny_squad_v1"])
def test_heldout_split_is_carved_from_train_disjoint_and_never_dev(tmp_path, task):
    cfg = _cfg(tmp_path, task, "lora", "protocol=heldout")
    splits, loaded = _loaded(cfg)
    train = _file_rows(cfg.task.dataset.data_files.train)
    dev = _file_rows(cfg.task.dataset.data_files.validation)
    held, rest = _rows(splits[HELDOUT_SPLIT]), _rows(splits[loaded.train_split])
    assert sorted(held + rest) == sorted(train)  # every training row is in exactly one of the two
    assert not set(held) & set(rest) and not set(held) & set(dev)
    assert len(held) >= 0.25 * len(train) and len(rest) > 0
    assert _rows(splits["validation"]) == dev  # the dev split is untouched


def test_heldout_split_is_the_same_for_every_method_seed_and_rerun(tmp_path):
    """The rows depend on the training rows and task.heldout only: not on the run's seed, method or RNG state."""
    seen = []
    for method, seed in (("lora", 0), ("adalora", 3), ("full_ft", 1)):
        torch.manual_seed(seed)
        np.random.seed(seed + 11)
        extra = ["protocol=heldout", f"seed={seed}"] + (["budget=none"] if method == "full_ft" else [])
        splits, _ = _loaded(_cfg(tmp_path, "tiny_glue_rte", method, *extra))
        seen.append((_rows(splits[HELDOUT_SPLIT]), _rows(splits["train"])))
    assert seen[0] == seen[1] == seen[2]
    assert len(seen[0][0]) == 12 and len(seen[0][1]) == 36  # 25% of the fixture's 48 rows


def test_squad_holds_out_whole_articles(tmp_path):
    splits, _ = _loaded(_cfg(tmp_path, "tiny_squad_v1", "lora", "protocol=heldout"))
    held, rest = splits[HELDOUT_SPLIT], splits["train"]
    assert set(held["title"]).isdisjoint(rest["title"]) and set(held["context"]).isdisjoint(rest["context"])
    titles = set(held["title"])
    assert len(titles) == 3 and len(held) == 12  # 4 questions per article: 3 articles reach 25% of 40 rows


def test_heldout_rows_sizes_and_group_rule():
    assert heldout_rows(range(100), HeldoutSpec(0.1)) == sorted(heldout_rows(range(100), HeldoutSpec(0.1)))
    assert len(heldout_rows(range(100), HeldoutSpec(0.1))) == 10
    assert len(heldout_rows(range(100_000), HeldoutSpec(0.1, max_examples=2000))) == 2000
    assert heldout_rows(range(100), HeldoutSpec(0.1, seed=1)) != heldout_rows(range(100), HeldoutSpec(0.1))
    groups = [i // 5 for i in range(50)]  # 10 groups of 5: 12 rows asked -> 3 whole groups
    held = heldout_rows(groups, HeldoutSpec(0.24))
    assert len(held) == 15 and all(sum(groups[r] == g for r in held) == 5 for g in {groups[r] for r in held})
    with pytest.raises(ValueError, match="at least one must stay"):
        heldout_rows(["one article"] * 8, HeldoutSpec(0.5))


@pytest.mark.parametrize(("override", "match"), [
    ("task.heldout=null", r"task\.heldout is not set.*fraction: 0\.1"),
    ("task.heldout.fraction=1.5", r"task\.heldout\.fraction must be a number in \(0, 1\)"),
    ("task.heldout.max_examples=0", r"task\.heldout\.max_examples must be a positive integer"),
    ("+task.heldout.size=3", r"task\.heldout has unknown key\(s\) \['size'\]"),
])
def test_bad_heldout_block_is_a_config_error_before_training(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        resolve(_cfg(tmp_path, "tiny_glue_rte", "lora", "protocol=heldout", override))
    resolve(_cfg(tmp_path, "tiny_glue_rte", "lora", override))  # the paper protocol never reads it


def test_unknown_protocol_and_missing_title_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"protocol='dev' is unknown; use one of \['heldout', 'paper'\]"):
        resolve(_cfg(tmp_path, "tiny_glue_rte", "lora", "protocol=dev"))
    rows = [json.loads(line) for line in Path(PROJECT_ROOT / "tests/fixtures/data/squad_v1/train.jsonl").read_text().splitlines()]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "title"}) + "\n" for r in rows))
    task = build_task({"family": "squad", "name": "no_titles", "heldout": {"fraction": 0.25},
                       "dataset": {"data_files": {"train": str(train), "validation": str(train)}}})
    get_protocol("heldout").prepare(task)
    with pytest.raises(DataValidationError, match=r"holds out whole 'title' groups.*no 'title' column"):
        task.load()


# ------------------------------------------------------------------------------ identity and directories
def test_paper_identity_is_unchanged_and_heldout_differs(tmp_path):
    paper = _cfg(tmp_path)
    config = OmegaConf.to_container(paper, resolve=True)
    before = {k: v for k, v in config.items() if k != "protocol"}  # a config written before protocols existed
    before["task"] = {k: v for k, v in before["task"].items() if k != "heldout"}
    assert identity_block(run_identity(before, "glue_0.3m"))["hash"] == \
        identity_block(run_identity(config, "glue_0.3m"))["hash"]
    assert "protocol" not in run_identity_block(paper)["keys"]
    assert run_identity_block(_cfg(tmp_path, "tiny_glue_rte", "lora", "protocol=paper"))["hash"] == \
        run_identity_block(paper)["hash"]
    heldout = run_identity_block(_cfg(tmp_path, "tiny_glue_rte", "lora", "protocol=heldout"))
    assert heldout["hash"] != run_identity_block(paper)["hash"] and heldout["group"] != run_identity_block(paper)["group"]
    assert heldout["keys"]["protocol"] == "heldout" and heldout["keys"]["task"]["heldout"]["fraction"] == 0.25
    other = run_identity_block(_cfg(tmp_path, "tiny_glue_rte", "lora", "protocol=heldout", "task.heldout.fraction=0.5"))
    assert other["hash"] != heldout["hash"]
    # A heldout run gets its own sub-directory; naming the default protocol keeps the standard path.
    assert dirname_overrides(["task=tiny_glue_rte", "protocol=heldout"]) == ["protocol=heldout"]
    assert dirname_overrides(["task=tiny_glue_rte", "protocol=paper"]) == []


@pytest.mark.slow  # composes the 1120 jobs of both Table 1 trees
def test_sweep_glue_heldout_is_table_1_under_heldout_in_its_own_tree(sweep_jobs):
    jobs = sweep_jobs("glue_heldout") + sweep_jobs("glue_heldout_baselines")
    paper = sweep_jobs("glue") + sweep_jobs("glue_baselines")
    assert len({j.run_dir for j in jobs}) == 560
    assert {Path(j.run_dir).parts[-5] for j in jobs} == {"glue_heldout"}
    assert {j.key for j in jobs} == {j.key for j in paper}
    assert not {j.identity for j in jobs} & {j.identity for j in paper}


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_paper_record_keeps_its_shape(tmp_path):
    cfg = _cfg(tmp_path, "tiny_glue_rte", "lora", "trainer.max_steps=6", "trainer.eval_every=2")
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    metrics = read_result(cfg.run_dir)["metrics"]
    assert set(metrics) == {"evals", "best", "final", "main_metric", "selection_split"}
    assert metrics["selection_split"] == "dev" and record["run"]["protocol"] == "paper"
    assert [e["step"] for e in metrics["evals"]] == [2, 4, 6]  # dev at every evaluation, as before
    assert metrics["best"] == best_eval(metrics["evals"], "accuracy") and metrics["final"] == metrics["evals"][-1]
    assert HELDOUT_SPLIT not in json.dumps(record["metrics"])


@pytest.mark.slow
def test_heldout_run_selects_on_validation_and_reports_dev_there(tmp_path):
    """STS-B correlations move with every weight: the selected step's dev numbers are that snapshot's only.

    Validation picks step 8; dev alone would have picked the final step (its dev score is higher),
    so the report cannot have looked at dev. The saved best weights, re-evaluated on dev,
    reproduce metrics.best exactly.
    """
    cfg = _cfg(tmp_path, "tiny_glue_stsb", "lora", "protocol=heldout", "trainer.max_steps=12", "trainer.eval_every=2")
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    metrics, main = read_result(cfg.run_dir)["metrics"], "combined_score"
    validation = metrics["validation_evals"]
    assert metrics["selection_split"] == "validation" and record["run"]["protocol"] == "heldout"
    assert [e["step"] for e in validation] == [2, 4, 6, 8, 10, 12]
    chosen = max(validation, key=lambda e: eval_score(e, main))
    assert metrics["best"]["step"] == chosen["step"] == 8
    assert metrics["final"]["step"] == 12 and metrics["final"][main] > metrics["best"][main]
    assert [e["step"] for e in metrics["evals"]] == [8, 12]  # dev is evaluated at these two steps only
    assert metrics["best"][main] != chosen[main]  # a dev number, not the validation one
    assert record["weights"]["best"]["step"] == 8
    for which in ("best", "final"):
        out = reevaluate(cfg.run_dir, which)
        assert out["reproduced"], (which, out["metrics"], out["recorded"])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["tiny_glue_rte", "tiny_squad_v1"])
def test_tiny_runs_under_each_protocol_end_to_end(tmp_path, task):
    records = {}
    for protocol in ("paper", "heldout"):
        cfg = _cfg(tmp_path / protocol, task, "lora", f"protocol={protocol}", "trainer.max_steps=8", "trainer.eval_every=2",
                   "trainer.lr=0.02")
        records[protocol] = run(cfg)
        assert records[protocol]["status"] == "success", records[protocol]["reason"]
    paper, heldout = records["paper"]["metrics"], records["heldout"]["metrics"]
    main = paper["main_metric"]
    assert paper["selection_split"] == "dev" and "validation_evals" not in paper
    assert heldout["selection_split"] == "validation"
    assert heldout["best"]["step"] == best_eval(heldout["validation_evals"], main)["step"]
    assert set(heldout["best"]) == set(paper["best"])  # dev metrics, keyed as the paper protocol's
    assert records["paper"]["identity"]["hash"] != records["heldout"]["identity"]["hash"]
    assert records["heldout"]["train"]["total_steps"] == records["paper"]["train"]["total_steps"] == 8


@pytest.mark.slow
def test_interrupted_heldout_run_resumes_to_the_same_report(tmp_path):
    from experiments.runner import _build

    extra = ("protocol=heldout", "trainer.max_steps=12", "trainer.eval_every=2", "trainer.checkpoint_every=3")
    full = run(_cfg(tmp_path / "full", "tiny_glue_stsb", "lora", *extra))
    cut = _cfg(tmp_path / "cut", "tiny_glue_stsb", "lora", *extra)
    trainer, _, _ = _build(cut, resolve(cut), Path(cut.run_dir), None)
    trainer.train(stop_after=10)  # dies at 10: the step-9 checkpoint, with the step-8 snapshot, survives
    del trainer
    resumed = run(cut)
    assert resumed["metrics"] == full["metrics"] and resumed["metrics"]["best"]["step"] == 8


# ------------------------------------------------------------------------------ lr search
def _search_record(lr: float, dev: float, validation: float) -> dict:
    """A finished heldout search run: dev and validation disagree on purpose."""
    best = {"step": 4, "accuracy": dev}
    return {"status": "success", "run": {"task": "rte", "method": "lora", "budget": "glue_0.3m", "seed": 0,
                                         "protocol": "heldout"},
            "config": {"trainer": {"lr": lr}},
            "metrics": {"main_metric": "accuracy", "selection_split": "validation", "best": best,
                        "final": {"step": 8, "accuracy": dev}, "evals": [best],
                        "validation_evals": [{"step": 4, "accuracy": validation}, {"step": 8, "accuracy": 0.0}]}}


def test_lr_search_under_heldout_selects_by_validation(tmp_path, monkeypatch):
    trials = [trial_from_record(_search_record(1e-4, dev=90.0, validation=60.0), "a"),
              trial_from_record(_search_record(3e-4, dev=70.0, validation=80.0), "b")]
    assert [t.score for t in trials] == [60.0, 80.0] and {t.protocol for t in trials} == {"heldout"}
    result = select(trials)
    assert result["selected"]["rte"]["lora"]["glue_0.3m"]["lr"] == 3e-4  # dev would have chosen 1e-4
    assert trial_from_record(_search_record(1e-4, 90.0, 60.0), "a", which="final").score == 0.0
    paper = trial_from_record({**_search_record(1e-4, 90.0, 60.0), "run": {"task": "rte", "method": "lora",
                                                                          "budget": "glue_0.3m", "seed": 0}}, "p")
    with pytest.raises(ValueError, match=r"protocols \['heldout', 'paper'\]"):
        select([*trials, paper])
    # The selection goes to the heldout file, which heldout runs read; paper runs keep theirs.
    paper_file, heldout_file = tmp_path / "paper.yaml", tmp_path / "heldout.yaml"
    monkeypatch.setenv(SELECTED_LR_ENV, str(paper_file))
    monkeypatch.setenv(SELECTED_LR_ENV + "_HELDOUT", str(heldout_file))
    write_selection(paper_file, select([paper]), "root", "best")
    with pytest.raises(ValueError, match=r"protocol=paper selections, these runs are protocol=heldout"):
        write_selection(paper_file, result, "root", "best")
    result["selected"] = {"glue_stsb": {"lora": {"glue_0.3m": {"lr": 3e-4}}}}
    write_selection(heldout_file, result, "root", "best")
    paper_file.write_text("selected:\n  glue_stsb:\n    lora:\n      glue_0.3m: {lr: 1.0e-05}\n")
    base = ["task=glue_stsb", "method=lora", "budget=glue_0.3m"]
    assert resolve(_compose([*base, "protocol=heldout"])).train.lr == 3e-4
    assert resolve(_compose(base)).train.lr == 1e-5


@pytest.mark.slow
def test_lr_search_scores_a_real_heldout_run_by_its_validation_eval(tmp_path):
    cfg = _cfg(tmp_path, "tiny_glue_stsb", "lora", "protocol=heldout", "trainer.max_steps=12", "trainer.eval_every=2",
               "trainer.lr=0.005")
    record = run(cfg)
    trial = trial_from_record(read_result(cfg.run_dir), cfg.run_dir)
    at_best = next(e for e in record["metrics"]["validation_evals"] if e["step"] == record["metrics"]["best"]["step"])
    assert trial.score == at_best["combined_score"] != record["metrics"]["best"]["combined_score"]
    assert trial.protocol == "heldout"
    assert (Path(cfg.run_dir) / WEIGHT_FILES["final"]).exists()
