"""Tables pool one configuration over distinct seeds; what differs is listed, never averaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.collect import collect, run_status
from analysis.tables import aggregate
from experiments.runner import PROJECT_ROOT

SOURCE = PROJECT_ROOT / "tests" / "fixtures" / "runs" / "fixtures" / "tiny_glue_rte" / "lora" / "glue_0.3m"


def _copy(root: Path, sweep: str, seed: int, edit=None, method: str = "lora") -> dict:
    """A committed real record (schema 1) placed under another sweep, optionally edited."""
    record = json.loads((SOURCE / f"seed={seed}" / "result.json").read_text())
    record["run"]["sweep"] = record["config"]["sweep_name"] = sweep
    record["run"]["method"] = method
    if edit is not None:
        edit(record)
    path = root / sweep / "tiny_glue_rte" / method / "glue_0.3m" / f"seed={seed}" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return record


def _best(record: dict) -> float:
    return record["metrics"]["best"]["accuracy"]


def _other_lr(record: dict) -> None:
    record["config"]["trainer"]["lr"] = 0.05
    record["metrics"]["best"]["accuracy"] = 0.0


def test_same_seed_twice_counts_once_and_is_pooled_with_other_seeds(tmp_path):
    a0, a1 = _copy(tmp_path, "a", 0), _copy(tmp_path, "a", 1)
    _copy(tmp_path, "b", 0)  # the same configuration and seed, run again by another sweep
    runs = collect(tmp_path)
    agg = aggregate(runs[runs["is_main"]])
    row = agg[(agg.task == "tiny_glue_rte") & (agg.method == "lora")].iloc[0]
    assert row.n == 2
    assert row["mean"] == pytest.approx((_best(a0) + _best(a1)) / 2)


def test_different_configurations_under_one_label_are_listed_not_averaged(tmp_path):
    _copy(tmp_path, "a", 0)
    _copy(tmp_path, "a", 1)
    _copy(tmp_path, "c", 0, _other_lr)  # an ad-hoc run at another learning rate, same label
    runs = collect(tmp_path)
    with pytest.warns(UserWarning, match="not pooled.*tiny_glue_rte/lora/glue_0.3m"):
        agg = aggregate(runs[runs["is_main"]])
    assert agg[(agg.task == "tiny_glue_rte") & (agg.method == "lora")].empty
    status = run_status(tmp_path)
    assert status["conflict"].notna().all()
    assert status["conflict"].str.contains(r"2 configurations of tiny_glue_rte/lora/glue_0.3m.*trainer\.lr").all()
    assert status.groupby("sweep")["config_group"].nunique().to_dict() == {"a": 1, "c": 1}
    assert status["config_group"].nunique() == 2


def test_unknown_schema_version_is_refused_and_the_rest_is_processed(tmp_path, capsys):
    _copy(tmp_path, "a", 0)

    def future(record: dict) -> None:
        record["schema_version"] = 99
        record["metrics"]["best"]["accuracy"] = 0.5  # a fraction, where this code expects percent

    _copy(tmp_path, "a", 1, future, method="adalora")
    status = run_status(tmp_path).set_index("method")
    assert status.loc["lora", "status"] == "success"
    assert status.loc["adalora", "status"] == "unreadable"
    assert "schema_version 99 is not one this code reads [1, 2]" in status.loc["adalora", "reason"]
    assert "schema_version 99" in capsys.readouterr().err
    assert set(collect(tmp_path)["method"]) == {"lora"}


def test_override_sub_directories_are_runs_and_their_seed_directory_is_not(tmp_path):
    record = _copy(tmp_path, "a", 0)
    sub = tmp_path / "a" / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=1" / "trainer.lr=0.05"
    sub.mkdir(parents=True)
    (sub / "result.json").write_text(json.dumps({**record, "run": {**record["run"], "seed": 1}}))
    (tmp_path / "a" / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=2").mkdir()  # never wrote a record
    status = run_status(tmp_path).set_index("seed")
    assert sorted(status.index) == [0, 1, 2]
    assert status.loc[1, "run_dir"] == str(sub) and status.loc[1, "status"] == "success"
    assert status.loc[2, "status"] == "missing" and status.loc[2, "method"] == "lora"
