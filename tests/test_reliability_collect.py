"""Collecting a results root with stray files in it, reading it once, and tables whose cells stay on one row."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import SNAPSHOT_ENV, collect, collected_once, main, run_status
from analysis.index_page import parse_markdown_table
from analysis.tables import present, to_markdown
from experiments.runner import PROJECT_ROOT

SOURCE = PROJECT_ROOT / "tests" / "fixtures" / "runs" / "fixtures" / "tiny_glue_rte" / "lora" / "glue_0.3m"


def _record(root: Path, seed: int, edit=None) -> Path:
    """A committed real record (schema 1) at ``root/s/tiny_glue_rte/lora/glue_0.3m/seed=<seed>``."""
    record = json.loads((SOURCE / f"seed={seed % 2}" / "result.json").read_text())
    record["run"]["seed"] = seed
    if edit is not None:
        edit(record)
    folder = root / "s" / "tiny_glue_rte" / "lora" / "glue_0.3m" / f"seed={seed}"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(record))
    return folder


def _strays(root: Path) -> dict[str, Path]:
    other = root / "s" / "notes" / "result.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"accuracy": 0.9, "model": "someone else's"}))
    empty = root / "s" / "tiny_glue_rte" / "lora" / "glue_0.6m" / "seed=abc"
    empty.mkdir(parents=True)
    listed = root / "s" / "list" / "result.json"
    listed.parent.mkdir(parents=True)
    listed.write_text("[1, 2]")
    text_seed = _record(root, 7, lambda r: r["run"].update(seed="seven"))
    return {"other": other.parent, "empty": empty, "list": listed.parent, "text_seed": text_seed}


def test_stray_files_are_skipped_by_path_and_the_runs_are_collected_with_integer_seeds(tmp_path, capsys):
    runs = [_record(tmp_path, 0), _record(tmp_path, 1)]
    strays = _strays(tmp_path)
    df, status = collect(tmp_path), run_status(tmp_path)
    err = capsys.readouterr().err
    assert f"[collect] skipped {strays['other']}: result.json has no 'schema_version' of a run record" in err
    assert f"[collect] skipped {strays['empty']}: directory 'seed=abc': the seed is not an integer" in err
    assert f"[collect] skipped {strays['list']}: result.json holds a JSON list, not a run record" in err
    assert f"[collect] skipped {strays['text_seed']}: run.seed is 'seven', not an integer" in err
    assert sorted(status["run_dir"]) == sorted(map(str, runs)) == sorted(set(df["run_dir"]))
    assert set(status["status"]) == {"success"}
    for frame in (df, status):
        assert pd.api.types.is_integer_dtype(frame["seed"]) and sorted(set(frame["seed"])) == [0, 1]


def test_the_cli_lists_what_it_skipped_and_writes_the_rest(tmp_path, capsys):
    _record(tmp_path, 0)
    _strays(tmp_path)
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "1 runs {'success': 1}; 4 skipped (not runs, listed above)" in captured.out
    assert captured.err.count("[collect] skipped") == 4
    assert pd.read_parquet(tmp_path / "out" / "run_status.parquet")["seed"].tolist() == [0]


@pytest.mark.slow
def test_collected_once_reads_the_records_once_for_this_process_and_its_children(tmp_path):
    _record(tmp_path, 0)
    fresh = collect(tmp_path), run_status(tmp_path)
    with collected_once(tmp_path):
        _record(tmp_path, 1)  # written after the snapshot: not read again inside the block
        pd.testing.assert_frame_equal(collect(tmp_path), fresh[0])
        pd.testing.assert_frame_equal(run_status(tmp_path), fresh[1])
        child = subprocess.run([sys.executable, "-c", "import sys; from analysis.collect import run_status; "
                                "print(len(run_status(sys.argv[1])))", str(tmp_path)],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
        assert child.stdout.strip() == "1"
    assert SNAPSHOT_ENV not in os.environ
    assert sorted(run_status(tmp_path)["seed"]) == [0, 1]


def test_a_multi_line_reason_with_bars_stays_in_its_row(tmp_path):
    _record(tmp_path, 0)
    reason = "RuntimeError: shape | mismatch\nTraceback (most recent call last):\n  File \"x.py\", line 1\r\n"
    _record(tmp_path, 1, lambda r: r.update(status="failed", reason=reason))
    status = run_status(tmp_path)
    text = to_markdown(present(status.drop(columns="run_dir").set_index(["task", "method", "budget", "seed"])),
                       "Run status")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2  # header, rule, two runs
    _, header, cells = parse_markdown_table(text)
    assert all(len(row) == len(header) for row in cells)
    failed = next(row for row in cells if "failed" in row)
    assert failed[header.index("reason")] == ('RuntimeError: shape | mismatch ↵ Traceback (most recent call last): ↵ '
                                              'File "x.py", line 1')


def test_make_help_aligns_its_columns_and_shows_variable_values():
    out = subprocess.run(["make", "--no-print-directory", "help", "OUT=runs"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert "$(" not in out and "\x1b[" not in out  # not a terminal: no colour codes
    assert any("runs in runs_lr_search" in line and "-> conf/selected_lr.yaml" in line for line in lines)
    starts = {re.match(r"  \S+\s+", line).end() for line in lines}
    assert len(starts) == 1  # every description starts in one column
    assert "  install-browser  Debian's Chromium" in out  # the longest name keeps two spaces
