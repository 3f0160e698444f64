"""The report page shows this build and nothing else: staged builds, other people's files, any locale.

The fast tests drive the staged build (``analysis.run_notebooks.staged_build``) with files as the
notebooks name them; the slow one builds again over a copy of the shared ``make figures`` of the
committed tiny runs, in a locale whose default encoding is not UTF-8, with a task removed between the builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.index_page import parse_markdown_table, write_index
from analysis.run_notebooks import MANIFEST, carry_over, staged_build
from tests.make_figures_shared import LATIN1_ENV, RUNS, fixture_runs_figures, make_figures
from tests.test_report_page import PNG, open_in_browser

TABLE = "### Table 1\n\n| Method | Budget | Source | RTE |\n| --- | --- | --- | --- |\n| LoRA | 0.3M | ours | {} |\n"
LATIN1_NOTES = "Notes de l'équipe: café, déjà vu\n".encode("latin-1")  # not UTF-8: é is one byte 0xE9; its ASCII start, "Notes de l", marks it on a page in any decoding


def _build(out: Path, files: dict[str, bytes]) -> list[Path]:
    """One build writing ``files`` (name -> bytes) and the page; returns what it says it wrote."""
    with staged_build(out) as (staging, written):
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        write_index(RUNS, staging)
    return written


def test_a_build_removes_the_previous_builds_files_it_did_not_rewrite_and_nothing_else(tmp_path):
    out = tmp_path / "figures"
    _build(out, {"budget_curve_tiny_squad_v2_f1.png": PNG, "table1_best.md": TABLE.format("72.00").encode(),
                 "table1_heldout_best.md": TABLE.format("70.00").encode(), "notebooks/ablations.ipynb": b"{}"})
    (out / "notes.md").write_bytes(LATIN1_NOTES)  # the user's own, after the first build
    (out / "my_plot.png").write_bytes(PNG)
    written = _build(out, {"table1_best.md": TABLE.format("73.00").encode(), "figure2.png": PNG})
    names = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert names == sorted([MANIFEST, "figure2.png", "index.html", "my_plot.png", "notes.md", "table1_best.md"])
    assert sorted(written) == sorted(out / n for n in (MANIFEST, "figure2.png", "index.html", "table1_best.md"))
    assert (out / "notes.md").read_bytes() == LATIN1_NOTES  # neither read, nor rewritten, nor removed
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "73.00" in page and "72.00" not in page and "figure2.png" in page
    for gone in ("budget_curve_tiny_squad_v2", "table1_heldout_best", "notes.md", "Notes de l", "my_plot"):
        assert gone not in page
    assert (out / MANIFEST).read_text(encoding="utf-8").split() == ["figure2.png", "table1_best.md", "index.html"]


def test_a_failed_build_leaves_the_previous_one_as_it_was(tmp_path):
    out = tmp_path / "figures"
    _build(out, {"table1_best.md": TABLE.format("72.00").encode()})
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="a notebook failed"), staged_build(out) as (staging, _):
        (staging / "table1_best.md").write_text(TABLE.format("99.00"), encoding="utf-8")
        raise RuntimeError("a notebook failed")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".build-")] == []


def test_a_partial_rebuild_keeps_the_other_notebooks_files_on_the_page(tmp_path):
    """``--only results_tables`` reruns one notebook: the others' files of the last build stay."""
    out = tmp_path / "figures"
    _build(out, {"figure2.png": PNG, "table1_best.md": TABLE.format("72.00").encode()})
    with staged_build(out) as (staging, _):
        (staging / "table1_best.md").write_text(TABLE.format("73.00"), encoding="utf-8")
        carry_over(out, staging)
        write_index(RUNS, staging)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "73.00" in page and "72.00" not in page and "figure2.png" in page and (out / "figure2.png").is_file()
    assert sorted((out / MANIFEST).read_text(encoding="utf-8").split()) == ["figure2.png", "index.html",
                                                                            "table1_best.md"]


def test_a_manifest_naming_paths_outside_the_figures_folder_removes_nothing_there(tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    (out / "linked").symlink_to(tmp_path, target_is_directory=True)
    (out / MANIFEST).write_text(f"../victim.txt\n{victim}\nlinked/victim.txt\n", encoding="utf-8")
    _build(out, {"table1_best.md": TABLE.format("72.00").encode()})
    assert victim.read_text(encoding="utf-8") == "keep me"


def test_the_page_is_built_without_a_file_that_is_not_utf8_and_says_so(tmp_path, capsys):
    out = tmp_path / "figures"
    out.mkdir()
    (out / "table1_best.md").write_text(TABLE.format("72.00 ± 1.00 (n=2)"), encoding="utf-8")
    (out / "team_notes.md").write_bytes(LATIN1_NOTES)
    page = write_index(RUNS, out).read_text(encoding="utf-8")
    assert "72.00 ± 1.00 (n=2)" in page and "team_notes" not in page and "Notes de l" not in page
    err = capsys.readouterr().err.splitlines()
    assert err == [f"[report page] left out {out / 'team_notes.md'}: not UTF-8 (invalid continuation byte at "
                   "byte 11); the notebooks write UTF-8, so it is not one of theirs"]


@pytest.mark.slow
def test_make_figures_drops_a_removed_tasks_files_and_writes_utf8_under_a_latin1_locale(tmp_path, tmp_path_factory):
    """Two builds in a locale whose default encoding is not UTF-8 (Latin-1 where the machine has it,
    else ASCII: either fails on the tables' ``±``, ``↑``, ``—``): the shared first build of the committed
    runs (``tests/make_figures_shared.py``) is copied, a user's Latin-1 ``notes.md`` is put in its figures
    folder and the SQuAD runs are removed, then the second build runs over the copy (the build that
    removes the previous build's files it did not rewrite, so the one that could take ``notes.md``)."""
    probe = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding())"],
                           env={**os.environ, **LATIN1_ENV}, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().lower().replace("_", "-") not in ("utf-8", "utf8")  # the test means something
    first = fixture_runs_figures(tmp_path_factory)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (first.out / "budget_curve_tiny_squad_v2_f1.png").is_file()
    root = tmp_path / "runs"
    shutil.copytree(first.root, root)
    out = root / "figures"
    (out / "notes.md").write_bytes(LATIN1_NOTES)
    shutil.rmtree(root / "fixtures" / "tiny_squad_v2")
    second = make_figures(root)
    assert second.returncode == 0, second.stderr[-3000:]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert not list(out.glob("*tiny_squad_v2*")) and "tiny_squad_v2" not in page
    assert (out / "notes.md").read_bytes() == LATIN1_NOTES and "notes.md" not in page and "Notes de l" not in page
    runs = sorted(root.rglob("result.json"))
    status = (out / "run_status.md").read_text(encoding="utf-8")
    _, header, rows = parse_markdown_table(status)
    assert len(rows) == len(runs) == 26 and all(len(row) == len(header) for row in rows)  # whole
    assert "—" in status and "±" in (out / "summary_best.md").read_text(encoding="utf-8")  # neither is ASCII
    assert open_in_browser(out / "index.html", tmp_path)["check"] == "ok"
