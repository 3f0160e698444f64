"""Reading a results folder that travelled: malformed records, linked sweep folders, records naming code.

Every record is a committed real one (``tests/fixtures/runs``), copied and edited in one field, so the
good runs beside the bad one keep their real numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.collect import collect, load_records, run_status
from analysis.index_page import provenance, write_index
from analysis.run_summary import UNFINISHED, summarize
from experiments.runner import PROJECT_ROOT

SOURCE = PROJECT_ROOT / "tests" / "fixtures" / "runs" / "fixtures" / "tiny_glue_rte" / "lora" / "glue_0.3m"


def _record(root: Path, seed: int, edit=None, sweep: str = "s") -> Path:
    """A committed real record (schema 1) at ``root/<sweep>/tiny_glue_rte/lora/glue_0.3m/seed=<seed>``."""
    record = json.loads((SOURCE / f"seed={seed % 2}" / "result.json").read_text(encoding="utf-8"))
    record["run"]["seed"] = record["config"]["seed"] = seed
    if edit is not None:
        edit(record)
    folder = root / sweep / "tiny_glue_rte" / "lora" / "glue_0.3m" / f"seed={seed}"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


MALFORMED = {
    "a metric that is a string": (lambda r: r["metrics"]["best"].update(accuracy="high"),
                                  "metrics.best.accuracy is 'high' (a string), not a number that fits a float64"),
    "a metric that is a list": (lambda r: r["metrics"]["final"].update(accuracy=[50.0]),
                                "metrics.final.accuracy is [50.0] (a list), not a number that fits a float64"),
    "a metric that is a huge integer": (lambda r: r["metrics"]["evals"][1].update(accuracy=10**400),
                                        "metrics.evals[1].accuracy is 1000000000000000000000000000000000000... "
                                        "(an integer), not a number that fits a float64"),
    "a missing main metric": (lambda r: r["metrics"]["best"].pop("accuracy"),
                              "status is 'success' but metrics.best has no value of its main metric 'accuracy'"),
    "a task that is an int": (lambda r: r["run"].update(task=3), "run.task is 3 (an integer), not a string"),
    "a seed beyond int64": (lambda r: r["run"].update(seed=2**63),
                            "run.seed is 9223372036854775808 (an integer), not an integer that fits int64"),
    "a success without metrics": (lambda r: r.pop("metrics"), "status is 'success' but the record has no metrics"),
    "params that are a list": (lambda r: r.update(params=[1792]), "params is [1792] (a list), not an object"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_record_is_skipped_by_path_with_the_reason_and_the_others_are_reported(case, tmp_path, capsys):
    edit, why = MALFORMED[case]
    good = _record(tmp_path, 0)
    bad = _record(tmp_path, 1, edit)
    (tmp_path / "figures").mkdir()
    df, status = collect(tmp_path), run_status(tmp_path)
    summary, page = summarize(tmp_path, tmp_path / "figures"), write_index(tmp_path, tmp_path / "figures")
    provenance(tmp_path)
    err = capsys.readouterr().err
    line = f"[collect] skipped {bad / 'result.json'}: {why}; left out of the tables (fix or remove the file)"
    assert err.splitlines() == [line]  # once, although the records were read five times
    assert set(df["run_dir"]) == {str(good)} and df.loc[df["metric"] == "accuracy", "value_best"].tolist() == [50.0]
    rows = status.set_index("run_dir")
    assert rows.loc[str(good), "status"] == "success" and rows.loc[str(bad), "status"] == "unreadable"
    assert rows.loc[str(bad), "reason"].startswith(why)
    assert rows.loc[str(bad), "seed"] == 1  # from its directory
    assert summary.status_text() == "2 (1 success, 1 unreadable)"
    assert summary.warnings[UNFINISHED] == [f"tiny_glue_rte/lora/glue_0.3m/seed=1: unreadable ({rows.loc[str(bad), 'reason']})"]
    assert "unreadable" in page.read_text(encoding="utf-8")


def test_a_symlinked_sweep_folder_is_collected_and_a_link_loop_is_read_once(tmp_path, capsys):
    shared = tmp_path / "shared_disk"
    theirs = _record(shared, 1, sweep="colleague")
    root = tmp_path / "outputs"
    mine = _record(root, 0)
    (root / "colleague").symlink_to(shared / "colleague", target_is_directory=True)
    (root / "s" / "again").symlink_to(root / "s", target_is_directory=True)  # a loop back to its parent
    (root / "alias").symlink_to(root / "s", target_is_directory=True)  # the same sweep twice
    status = run_status(root)
    linked = root / "colleague" / theirs.relative_to(shared / "colleague")
    assert sorted(status["run_dir"]) == sorted([str(linked), str(mine)])
    assert set(status["status"]) == {"success"} and sorted(status["seed"]) == [0, 1]
    assert sorted(collect(root)["seed"].unique()) == [0, 1]
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == sorted(f"[collect] skipped {root / p}: the same directory as {root / 's'}, read already "
                                 "through another path under this root (a symbolic link); its runs are listed once"
                                 for p in ("alias", "s/again"))


PAYLOAD = "from pathlib import Path\nPath({marker!r}).write_text('the payload ran')\n"


@pytest.mark.slow
def test_collect_and_the_page_never_import_a_module_a_schema1_record_names(tmp_path):
    """A folder dropped under outputs/ holds ``payload.py`` and a schema-1 record naming it as
    ``method.module``; computing that record's identity must not import it, even with the folder
    on ``sys.path`` (where a user starts Python, or a notebook kernel's path)."""
    root = tmp_path / "outputs"
    _record(root, 0)
    dropped = _record(root, 1, lambda r: r["config"]["method"].update(module="payload"), sweep="dropped")
    marker = tmp_path / "marker"
    (dropped / "payload.py").write_text(PAYLOAD.format(marker=str(marker)), encoding="utf-8")
    script = ("import sys; from analysis.collect import main; from analysis.index_page import write_index; "
              "main([sys.argv[1], '--out', sys.argv[2]]); write_index(sys.argv[1], sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(dropped)])}
    env.pop("ADALORA_TRUST_MODULES", None)
    done = subprocess.run([sys.executable, "-c", script, str(root), str(tmp_path / "out")], cwd=dropped, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists()
    # the identity comes from the stored config alone (experiments.spec.stored_blocks): the run is pooled
    assert not [line for line in done.stderr.splitlines() if line.startswith("[collect] skipped")], done.stderr
    assert done.stdout.startswith("2 runs {") and "'success': 2" in done.stdout, done.stdout


def test_load_records_hands_the_good_records_on_beside_a_bad_one(tmp_path, capsys):
    _record(tmp_path, 0)
    _record(tmp_path, 1, lambda r: r.update(status=7))
    loaded = {d.name: (record is not None, error) for d, record, error in load_records(tmp_path)}
    assert loaded["seed=0"] == (True, None)
    assert loaded["seed=1"][0] is False and loaded["seed=1"][1].startswith("status is 7 (an integer), not one of")
    assert capsys.readouterr().err.count("\n") == 1
