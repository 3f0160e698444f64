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
from experiments.identity import identity_hash, record_identity

RUNS = Path(__file__).parent / "fixtures" / "runs"
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
    profile = tmp_path / "chromium-profile"
    out = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                          "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body([^>]*)>", out.stdout)
    assert body, f"Chromium printed no DOM (exit {out.returncode}): {out.stderr[-2000:]}"
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))


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
def figures(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`make figures` over the committed fixture runs, into a temporary folder."""
    root = tmp_path_factory.mktemp("figures") / "runs"
    shutil.copytree(RUNS, root)
    done = subprocess.run(["make", "-s", "figures", f"OUT={root}", f"PYTHON={sys.executable}"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "figures", done


@pytest.mark.slow
def test_make_figures_prints_only_the_files_it_wrote(figures):
    out, done = figures
    listed = done.stdout.splitlines()
    assert done.stderr == ""  # no kernel TCP warnings, no absl INFO lines
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
