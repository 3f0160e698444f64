"""`make figures` end to end: its output, its errors, and the report page opened in a real browser.

The browser is Debian's Chromium (``make install-browser``; ``.ci/run`` installs it before the
tests), driven headless with ``--dump-dom``: the page checks itself on load (every image
decoded, every table has rows) and writes the verdict to ``<body data-check>``, which the test
reads from the DOM Chromium prints. No browser is ever downloaded at test time; without
Chromium these tests fail and say how to install it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.index_page import parse_markdown_table, provenance, write_index
from analysis.paths import REPO_ROOT, RESULTS_ENV, NoRuns, default_results_root, in_repo, require_runs
from analysis.run_summary import CONFLICTS, MISSING, UNCONVERGED, UNFINISHED, summarize
from experiments.identity import identity_hash
from experiments.spec import record_identity
from tests.make_figures_shared import RUNS, FiguresBuild, fixture_runs_figures

WINDOW = (1280, 900)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A valid 1x1 PNG, and bytes that are not one (a figure that failed to write).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d4944415478da63f8cfc0f01f0005000201a5e0e6d60000000049454e44ae426082")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: run `make install-browser` (Debian's chromium package); "
                    "the report-page tests need a real headless browser")
    return path


def open_in_browser(page: Path, tmp_path: Path) -> dict[str, str]:
    """The ``data-*`` attributes of ``<body>`` after Chromium loaded ``page`` and its script ran."""
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', _dump_dom(page, tmp_path)[1]))


def _dump_dom(page: Path, tmp_path: Path) -> tuple[str, str]:
    """(the DOM Chromium printed, the attributes of its ``<body>``) in a 1280 x 900 window."""
    profile = tmp_path / "chromium-profile"
    out = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                          f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    body = re.search(r"<body([^>]*)>", out.stdout)
    assert body, f"Chromium printed no DOM (exit {out.returncode}): {out.stderr[-2000:]}"
    return out.stdout, body.group(1)


def screenshot(page: Path, tmp_path: Path) -> Path:
    """A PNG of the page's first viewport as Chromium draws it."""
    shot = tmp_path / "screenshot.png"
    out = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-shot'}",
                          "--virtual-time-budget=15000", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                          f"--screenshot={shot}", page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"Chromium wrote no screenshot (exit {out.returncode}): {out.stderr[-2000:]}"
    return shot


# --- paths and errors ---------------------------------------------------------------------------


def test_relative_paths_are_taken_against_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # as Jupyter does: the kernel starts in analysis/notebooks/
    assert in_repo("tests/fixtures/runs") == RUNS.resolve()
    assert require_runs("tests/fixtures/runs") == RUNS.resolve()
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "elsewhere"))
    assert default_results_root() == str(tmp_path / "elsewhere")


def test_missing_or_empty_results_root_is_an_error(tmp_path):
    with pytest.raises(NoRuns, match="does not exist.*make smoke"):
        require_runs(tmp_path / "typo")
    with pytest.raises(NoRuns, match="holds no run"):
        require_runs(tmp_path)


@pytest.mark.slow
def test_make_figures_with_a_typo_exits_nonzero_and_writes_nothing(tmp_path):
    out = subprocess.run(["make", "-s", "figures", f"OUT={tmp_path / 'typo'}", f"PYTHON={sys.executable}"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "typo does not exist" in out.stderr and out.stdout == ""
    assert not (tmp_path / "typo").exists()


# --- the page -----------------------------------------------------------------------------------


def test_markdown_tables_parse_back_with_escaped_pipes():
    title, header, rows = parse_markdown_table(
        "### T\n\n| Method | RTE |\n| --- | --- |\n| AdaLoRA S=\\|λ\\| | 72.00 ± 2.83 (n=2) |\n")
    assert (title, header, rows) == ("T", ["Method", "RTE"], [["AdaLoRA S=|λ|", "72.00 ± 2.83 (n=2)"]])


def test_the_page_check_fails_on_a_broken_image(tmp_path):
    """The check the browser test relies on can fail: one undecodable PNG is reported by name."""
    out = tmp_path / "figures"
    out.mkdir()
    (out / "table1_best.md").write_text("### Table 1\n\n| Method | RTE |\n| --- | --- |\n| LoRA | 72.00 |\n")
    (out / "figure2.png").write_bytes(PNG)
    (out / "rank_heatmap_broken.png").write_bytes(b"not a png")
    page = write_index(RUNS, out)
    body = open_in_browser(page, tmp_path)
    assert body["check"] == "failed: image rank_heatmap_broken.png"
    assert (body["images"], body["tables"]) == ("1", "1")


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> tuple[Path, FiguresBuild]:
    """`make figures` over the committed fixture runs (built once per test run, in a Latin-1 locale, and
    shared with tests/test_reliability_analysis_page.py); the tests here only read it."""
    done = fixture_runs_figures(tmp_path_factory)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.out, done


@pytest.mark.slow
def test_make_figures_prints_the_files_it_wrote_then_a_summary(figures):
    out, done = figures
    listed, _, summary = done.stdout.partition("\n\n")
    listed = listed.splitlines()
    assert done.stderr == ""  # no kernel TCP warnings, no absl INFO lines
    lines = summary.splitlines()
    assert lines[0] == "runs: 28 (28 success)"
    assert lines[1].startswith("warnings: ") and int(lines[1].split()[1]) >= 2  # the XSum runs evaluate once
    assert "  2 runs that had not converged (analysis.convergence)" in lines
    assert Path(lines[-1].removeprefix("report page: ")).resolve() == (out / "index.html").resolve()
    assert listed and all(Path(line).is_file() for line in listed)
    written = {p for p in out.rglob("*") if p.is_file()}
    assert {Path(line).resolve() for line in listed} == {p.resolve() for p in written}
    assert (out / "index.html").resolve() in {Path(line).resolve() for line in listed}


@pytest.mark.slow
def test_report_page_opens_in_chromium_with_every_image_and_table(figures, tmp_path):
    out, _ = figures
    body = open_in_browser(out / "index.html", tmp_path)
    pngs = list(out.glob("*.png"))
    tables = [p for p in out.glob("*.md") if not p.stem.endswith("_notes") and p.stem != "paper_inconsistencies"]
    assert body["check"] == "ok"
    assert int(body["images"]) == len(pngs) >= 10  # Figure 2, per-task curves, heatmaps, rank over training
    assert int(body["tables"]) == len(tables) >= 10  # Tables 1-5, 14, 15 (best/final), summary, run status
    page = (out / "index.html").read_text()
    assert "figure2.png" in page and 'id="table1_best"' in page and 'id="table2_best"' in page
    records = [json.loads(p.read_text()) for p in RUNS.rglob("result.json")]
    for record in records:  # provenance: every run's git sha and package versions are on the page
        assert f"<code>{record['env']['git_sha']}</code>" in page
        assert f"torch=={record['env']['versions']['torch']}" in page
    assert f"{len(records)} ({len(records)} success)" in page  # the run status


def test_provenance_counts_config_hashes_and_precision_of_old_and_new_records(tmp_path):
    """Schema-1 records (no stored identity, no precision) get their hash from their config; newer
    ones carry both. (The page read a ``config_hash`` key no record has, and showed none.)"""
    source = next(RUNS.rglob("result.json"))
    old = json.loads(source.read_text())
    new = json.loads(source.read_text())
    new["run"]["seed"] = new["config"]["seed"] = 7
    identity = record_identity(new)
    new.update(schema_version=2, identity={"hash": identity_hash(identity), "group": "g", "keys": identity})
    new["train"].update(precision="bf16", tf32=True)
    for name, record in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(record))
    prov = provenance(tmp_path)
    assert prov["config_hashes"] == {identity_hash(record_identity(old)): 1, identity_hash(identity): 1}
    assert prov["runs_precision"] == {"not recorded (fp32 by default)": 1, "bf16, tf32 on": 1}


# --- the top of the page: the user's runs and the warnings ---------------------------------------

TABLE1 = ("### Table 1\n\n| Method | Budget | Source | #Params | RTE |\n| --- | --- | --- | --- | --- |\n"
          "| LoRA | 0.3M | ours | 0.3M | 72.00 ± 1.00 (n=2) |\n| LoRA | 0.3M | paper | 0.3M | 85.56 (Δ -13.56) |\n"
          "| AdaLoRA | 0.3M | ours | 0.3M | 73.00 ± 0.50 (n=2) |\n| AdaLoRA | 0.3M | paper | 0.3M | 87.36 (Δ -14.36) |\n")
TABLE4 = "### Table 4\n\n| Method | Source | RTE 0.3M |\n| --- | --- | --- |\n| AdaLoRA | paper | 88.09 |\n"
PAIRED = "### Table 1, paired\n\n| Task | Δ AdaLoRA − LoRA | 95% CI |\n| --- | --- | --- |\n| RTE | 1.00 | [-2, 4] |\n"


def user_results(tmp_path: Path) -> tuple[Path, Path]:
    """(results root, figures folder): the fixture runs with one failed run and one conflicting
    configuration added, and tables as ``make figures`` writes them, one holding only the paper's rows."""
    root = tmp_path / "runs"
    shutil.copytree(RUNS, root)
    failed = root / "fixtures/tiny_glue_rte/lora/glue_0.6m/seed=1/result.json"
    record = json.loads(failed.read_text())
    record.update(status="failed", reason="RuntimeError: CUDA out of memory")
    failed.write_text(json.dumps(record))
    source = root / "fixtures/tiny_glue_sst2/adalora/glue_0.3m/seed=0"
    other = json.loads((source / "result.json").read_text())
    other["config"]["trainer"]["lr"] = 0.1
    (source / "trainer.lr=0.1").mkdir()
    (source / "trainer.lr=0.1" / "result.json").write_text(json.dumps(other))
    out = tmp_path / "figures"
    out.mkdir()
    for stem, text in (("table1_best", TABLE1), ("table4_best", TABLE4), ("table1_paired", PAIRED)):
        (out / f"{stem}.md").write_text(text)
    (out / "ablations_notes.md").write_text("- table4 (best): no successful runs at its rows; only the paper's numbers\n")
    return root, out


def test_the_summary_counts_the_runs_and_names_every_warning(tmp_path):
    root, out = user_results(tmp_path)
    summary = summarize(root, out)
    assert summary.status_text() == "29 (28 success, 1 failed)"
    assert (summary.tasks, summary.seeds) == (["tiny_glue_rte", "tiny_glue_sst2", "tiny_squad_v2", "tiny_xsum"], ["0", "1"])
    assert summary.methods == ["full_ft", "bitfit", "lora", "adalora"]  # the tables' order
    assert summary.warnings[UNFINISHED] == ["tiny_glue_rte/lora/glue_0.6m/seed=1: failed (RuntimeError: CUDA out of memory)"]
    assert len(summary.warnings[CONFLICTS]) == 1 and "trainer.lr" in summary.warnings[CONFLICTS][0]
    assert summary.warnings[UNCONVERGED] == [f"tiny_xsum/{m}/nlg_0.26/seed=0: too few evals (1 evaluation(s))"
                                             for m in ("lora", "adalora")]
    assert summary.warnings[MISSING] == ["table4 (best): no successful runs at its rows; only the paper's numbers"]
    assert summary.warning_count == 5


def test_the_page_leads_with_the_users_runs_and_warnings_in_chromium(tmp_path):
    """Chromium lays the page out in a 1280 x 900 window: the summary and the warning box start in
    the first viewport, before the contents and the tables; the user's rows come before the
    paper's; a table with only the paper's rows is collapsed; the screenshot shows the box."""
    root, out = user_results(tmp_path)
    page = write_index(root, out)
    dom, attributes = _dump_dom(page, tmp_path)
    body = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', attributes))
    assert body["check"] == "ok"
    assert 0 < int(body["summary-top"]) < int(body["warnings-top"]) < int(body["viewport"]) <= WINDOW[1]
    order = [dom.index(marker) for marker in ('id="summary"', 'id="warnings"', 'id="contents"', 'id="table1_best"',
                                              'id="table1_paired"', 'id="paper-only"', 'id="table4_best"')]
    assert order == sorted(order)
    assert "Warnings (5)" in dom and "29 (28 success, 1 failed)" in dom
    assert "CUDA out of memory" in dom and "trainer.lr" in dom
    table1 = dom[dom.index('id="table1_best"'):dom.index("</table>", dom.index('id="table1_best"'))]
    assert table1.index("72.00") < table1.index("73.00") < table1.index('class="paper"') < table1.index("85.56")
    paper_only = dom[dom.index('id="paper-only"'):dom.index("</details>")]
    assert "table4_best" in paper_only and "table1_best" not in paper_only
    from matplotlib.image import imread

    pixels = imread(screenshot(page, tmp_path))[:, :, :3]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    warning_border = (abs(pixels - [0xC7 / 255, 0x77 / 255, 0x00]).max(axis=2) < 0.03).sum()
    assert warning_border > 1000  # the box's 2-px orange border drawn in the first viewport
