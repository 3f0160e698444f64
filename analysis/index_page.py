"""One report page, ``<out_dir>/index.html``: the user's runs first, then every table and figure.

The page leads with what the user ran (tasks, methods, budgets, seeds, runs by status;
``analysis.run_summary``) and a box with every warning: conflicting configurations, failed,
unfinished or unconverged runs, cells and figures the notebooks could not fill. A table of
contents follows, then the tables that hold a row of the user's, the user's rows first and the
paper's beneath; tables with only the paper's numbers are collapsed under "Paper only". Then the
figures, the notes and the provenance of the runs: git sha(s), package versions, training precision
(``trainer.precision`` / ``trainer.tf32``), config hashes (stored, or computed from the stored
config for schema-1 records). Every Markdown table ``make figures`` wrote in this build is shown
(the page is written in the build's staging folder: ``analysis.run_notebooks``), the analysis
helper's paired and protocol tables (``table*_paired.md``, ``table1_protocols.md``) included when
present; every file is read as UTF-8, and one that is not is left out with a line on stderr. The
decoder-LLM outputs (``llm_*``: ``analysis.llm_report``) have a section of their own, "Decoder LLMs",
present only where the build wrote any.

The page is static (no server, no network, no external asset: it opens from disk). A script on it
checks itself once loaded: every image decoded (``complete`` and a non-zero ``naturalWidth``) and
every table has rows; it writes the verdict to ``<body>``'s ``data-check`` ("ok" or what failed),
and where the summary and the warning box lie (``data-summary-top``, ``data-warnings-top``, in CSS
pixels, with ``data-viewport``), which the browser test reads from Chromium's DOM dump.
"""

from __future__ import annotations

import html
import json
import subprocess
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.collect import load_records, stored_or_computed_identity
from analysis.paths import REPO_ROOT, read_output
from analysis.run_summary import RunSummary, summarize
from analysis.tables.llm_tables import LLM_PREFIX, allocation_summary
from experiments.identity import identity_hash

INDEX = "index.html"
# Section order of the page: (heading, file-name prefixes). Anything else goes under "Other".
FIGURE_SECTIONS = (
    ("Figure 2: budget curves", ("figure2", "budget_curve")),
    ("Final-rank heatmaps (Figure 3)", ("rank_heatmap",)),
    ("Rank allocation over training", ("rank_over_training",)),
    ("Ablation curves", ("ablation_curve",)),
)
TABLE_ORDER = ("table1", "table2", "table3", "table4", "table5", "table14", "table15", "summary", "run_status")
ANALYSIS_PACKAGES = ("pandas", "matplotlib", "numpy", "nbclient", "jupytext")

_CHECK_SCRIPT = """
window.addEventListener("load", () => {
  const problems = [];
  const images = Array.from(document.images);
  for (const img of images) {
    if (!(img.complete && img.naturalWidth > 0)) problems.push("image " + img.getAttribute("src"));
  }
  const tables = Array.from(document.querySelectorAll("table"));
  for (const t of tables) {
    if (t.tBodies.length === 0 || t.tBodies[0].rows.length === 0) problems.push("table " + t.id);
  }
  document.body.dataset.images = String(images.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.dataset.tables = String(tables.length);
  for (const id of ["summary", "warnings"]) {
    const el = document.getElementById(id);
    document.body.dataset[id + "Top"] = el ? String(Math.round(el.getBoundingClientRect().top + window.scrollY)) : "none";
  }
  document.body.dataset.viewport = String(window.innerHeight);
  document.body.dataset.check = problems.length ? "failed: " + problems.join(", ") : "ok";
});
"""

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       padding: 1.5em 2em 4em; max-width: 1300px; }
h1 { font-size: 1.6em; margin: 0 0 0.4em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin: 1.4em 0 0.3em; }
a { color: #0b5cad; }
.summary { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; margin: 0.5em 0 1em;
           padding: 0.8em 1em; background: #f4f7fb; border: 1px solid #d5e0ec; border-radius: 6px; }
.summary dt { font-weight: 600; }
.summary dd { margin: 0; }
.warnings { border: 2px solid #c77700; background: #fff8e6; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }
.warnings.none { border-color: #3a8a3a; background: #eef8ee; }
.warnings h2 { border: 0; margin: 0 0 0.3em; font-size: 1.15em; }
.warnings h3 { font-size: 1em; margin: 0.6em 0 0.2em; }
.warnings ul { margin: 0.2em 0 0.4em; padding-left: 1.4em; max-height: 16em; overflow-y: auto; }
nav.toc > ul { columns: 2; column-gap: 2em; margin: 0.5em 0 1em; }
nav.toc ul ul { margin: 0; padding-left: 1.2em; }
nav.toc li { break-inside: avoid; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.3em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }
thead th { background: #eef1f4; }
tbody.paper td, tr.paper td { color: #555; background: #f6f6f6; }
tbody.paper tr:first-child td { border-top: 2px solid #999; }
details.paper-only { margin: 1em 0; padding: 0.4em 0.8em; border: 1px solid #ddd; border-radius: 6px; }
details.paper-only > summary { cursor: pointer; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; }
code { background: #f3f3f3; padding: 0 3px; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.5em; }
"""


def parse_markdown_table(text: str) -> tuple[str | None, list[str], list[list[str]]]:
    """(title, header, rows) of a table written by ``analysis.tables.to_markdown``."""
    title = None
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("### "):
        title = lines.pop(0)[4:]

    def cells(line: str) -> list[str]:
        parts, current, escaped = [], "", False
        for char in line.strip()[1:-1]:
            if char == "|" and not escaped:
                parts.append(current.strip())
                current = ""
            elif char == "\\":
                escaped = True
                continue
            else:
                current += char
            escaped = False
        parts.append(current.strip())
        return parts

    rows = [cells(line) for line in lines if line.startswith("|")]
    return title, rows[0] if rows else [], rows[2:]


def _table_html(stem: str, text: str) -> tuple[str, bool]:
    """(the table's HTML, whether it holds a row of the user's runs).

    A table with a ``Source`` column (the paper's tables) shows the user's rows (``ours``) first
    and the paper's beneath, in a second ``<tbody>``; one without it (run status, summaries,
    paired comparisons) holds only the user's numbers.
    """
    title, header, rows = parse_markdown_table(text)
    heading = f'<h3 id="{html.escape(stem)}-title">{html.escape(title or stem)}</h3>'
    if not rows:  # nothing to show: say so rather than draw an empty table
        return f"{heading}<p><em>no rows</em></p>", False
    source = header.index("Source") if "Source" in header else None
    ours = [r for r in rows if source is None or r[source] != "paper"]
    paper = [r for r in rows if source is not None and r[source] == "paper"]

    def body(part: list[list[str]], cls: str) -> str:
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in part)
        return f"<tbody{cls}>{cells}</tbody>" if part else ""

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return (f'{heading}<p><a href="{html.escape(stem)}.md">{html.escape(stem)}.md</a> · '
            f'<a href="{html.escape(stem)}.csv">.csv</a></p>'
            f'<div class="scroll"><table id="{html.escape(stem)}"><thead><tr>{head}</tr></thead>'
            f'{body(ours, "")}{body(paper, " class=paper")}</table></div>'), bool(ours)


def _table_key(path: Path) -> tuple[int, str]:
    prefix = next((i for i, p in enumerate(TABLE_ORDER) if path.stem == p or path.stem.startswith(f"{p}_")),
                  len(TABLE_ORDER))
    return prefix, path.stem


def _is_decoder(path: Path) -> bool:
    """A decoder-LLM output (``analysis.llm_report``): shown in the page's decoder section, not among the others."""
    return path.name.startswith(LLM_PREFIX) and not path.stem.endswith("_notes")


def _figure_sections(out_dir: Path) -> list[tuple[str, list[Path]]]:
    pngs = sorted(p for p in out_dir.glob("*.png") if not _is_decoder(p))
    sections, used = [], set()
    for heading, prefixes in FIGURE_SECTIONS:
        members = [p for p in pngs if p.name.startswith(prefixes)]
        used.update(members)
        sections.append((heading, members))
    sections.append(("Other figures", [p for p in pngs if p not in used]))
    return [(h, m) for h, m in sections if m]


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(results_root: str | Path) -> dict[str, Any]:
    """What produced the runs (from their records) and this page (from this checkout)."""
    shas, versions, hashes, precisions = Counter(), Counter(), Counter(), Counter()
    for run_dir, record, _ in load_records(results_root):
        if record is None:
            continue
        env = record.get("env") or {}
        shas[env.get("git_sha") or "unknown"] += 1
        for name, version in (env.get("versions") or {}).items():
            versions[f"{name}=={version}"] += 1
        identity = stored_or_computed_identity(run_dir, record)  # schema 1: from its config, importing nothing
        if identity is not None:
            hashes[identity_hash(identity)] += 1
        precisions[_precision(record.get("train") or {})] += 1
    return {
        "runs_git_sha": dict(shas), "runs_versions": dict(sorted(versions.items())),
        "config_hashes": dict(hashes), "runs_precision": dict(precisions),
        "page_git_sha": _git_sha(),
        "page_versions": {p: _version(p) for p in ANALYSIS_PACKAGES},
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _precision(train: dict[str, Any]) -> str:
    """``trainer.precision`` and ``trainer.tf32`` of a run; records written before they existed trained
    in fp32 without TF32 (the defaults) but do not say so."""
    if "precision" not in train:
        return "not recorded (fp32 by default)"
    return f"{train['precision']}, tf32 {'on' if train.get('tf32') else 'off'}"


def _dl(items: dict[str, Any]) -> str:
    if not items:
        return "<p><em>none recorded</em></p>"
    return "<ul>" + "".join(f"<li><code>{html.escape(str(k))}</code>: {html.escape(str(v))}</li>"
                            for k, v in items.items()) + "</ul>"


def _list(items: list[str]) -> str:
    return ", ".join(f"<code>{html.escape(i)}</code>" for i in items) or "<em>none</em>"


def _summary_html(summary: RunSummary, built: str) -> str:
    """What was run: a definition list at the top of the page."""
    rows = [("Runs", html.escape(summary.status_text())), ("Results root", _list([str(summary.results_root)])),
            ("Sweeps", _list(summary.sweeps)), ("Tasks", _list(summary.tasks)), ("Methods", _list(summary.methods)),
            ("Budgets", _list(summary.budgets)), ("Seeds", _list(summary.seeds)), ("Built", html.escape(built))]
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<section id="summary"><h2>What was run</h2><dl class="summary">{items}</dl></section>'


def _warnings_html(summary: RunSummary) -> str:
    if not summary.warnings:
        return ('<section id="warnings" class="warnings none"><h2>No warnings</h2><p>Every run succeeded and '
                "converged, no configurations conflict, and every table and figure could be filled.</p></section>")
    parts = [f'<section id="warnings" class="warnings"><h2>Warnings ({summary.warning_count})</h2>']
    for category, lines in summary.warnings.items():
        parts.append(f"<h3>{html.escape(category)} ({len(lines)})</h3><ul>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
    return "".join(parts) + "</section>"


def _figures_html(pngs: list[Path]) -> list[str]:
    return [f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}" loading="eager">'
            f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in pngs]


def _decoder_html(out_dir: Path) -> tuple[str, list[tuple[str, str]]]:
    """The "Decoder LLMs" section (its tables, the allocation proof, a final-rank heatmap per rank-adaptive
    run) and its table-of-contents entries; ("", []) where the build wrote no decoder output."""
    tables, entries = [], []
    for path in sorted((p for p in out_dir.glob("*.md") if _is_decoder(p)), key=_decoder_key):
        text = read_output(path)
        if text is None:
            continue
        tables.append(_table_html(path.stem, text)[0])
        entries.append((f"{path.stem}-title", parse_markdown_table(text)[0] or path.stem))
    pngs = sorted(p for p in out_dir.glob("*.png") if _is_decoder(p))
    if not tables and not pngs:
        return "", []
    heatmaps = ["<h3>Final ranks per layer and projection, one per rank-adaptive run</h3>", *_figures_html(pngs)]
    return ('<section id="decoder-llms"><h2>Decoder LLMs</h2><p>The causal-LM runs: mean ± std over '
            "seeds, each method paired with the reference by seed; the proof that every rank-adaptive run "
            f"allocated; its final ranks.</p>{_allocation_html(out_dir)}" + "".join(tables)
            + ("".join(heatmaps) if pngs else "") + "</section>"), entries


def _allocation_html(out_dir: Path) -> str:
    """The allocation proof in one line (:func:`analysis.tables.allocation_summary` of the table the build wrote)."""
    path = out_dir / f"{LLM_PREFIX}allocation.csv"
    if not path.is_file():
        return ""
    summary = allocation_summary(pd.read_csv(path, encoding="utf-8"))
    return f'<p id="allocation-summary"><strong>Allocation:</strong> {html.escape(summary)}</p>'


def _decoder_key(path: Path) -> tuple[int, str]:
    """The allocation proof first (did the adaptive runs allocate at all?), then the tables by name."""
    return (0 if path.stem == f"{LLM_PREFIX}allocation" else 1, path.stem)


def _toc_html(entries: list[tuple[str, str]], paper_only: list[tuple[str, str]],
              decoder: list[tuple[str, str]] | None = None) -> str:
    def links(items: list[tuple[str, str]]) -> str:
        return "".join(f'<li><a href="#{html.escape(a)}">{html.escape(t)}</a></li>' for a, t in items)

    sub = f"<ul>{links(entries)}</ul>" if entries else ""
    only = f"<ul>{links(paper_only)}</ul>" if paper_only else ""
    return ('<nav class="toc" id="contents"><h2>Contents</h2><ul>'
            '<li><a href="#summary">What was run</a></li><li><a href="#warnings">Warnings</a></li>'
            f'<li><a href="#tables">Your results</a>{sub}</li>'
            + (f'<li><a href="#paper-only">Paper only</a>{only}</li>' if paper_only else "")
            + (f'<li><a href="#decoder-llms">Decoder LLMs</a><ul>{links(decoder)}</ul></li>' if decoder else "")
            + '<li><a href="#figures">Figures</a></li><li><a href="#notes">Notes</a></li>'
            '<li><a href="#provenance">Provenance</a></li></ul></nav>')


def write_index(results_root: str | Path, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/index.html`` from the files in ``out_dir`` and the runs under ``results_root``.

    ``make figures`` passes the staging folder of its build (``analysis.run_notebooks``), so the page
    shows the files this build wrote and nothing else that lies in the figures folder.
    """
    out_dir = Path(out_dir)
    prov = provenance(results_root)
    summary = summarize(results_root, out_dir)
    ours, paper_only = [], []
    decoder, decoder_toc = _decoder_html(out_dir)
    for path in sorted(out_dir.glob("*.md"), key=_table_key):
        if path.stem.endswith("_notes") or path.stem == "paper_inconsistencies" or _is_decoder(path):
            continue
        text = read_output(path)
        if text is None:
            continue
        table, has_ours = _table_html(path.stem, text)
        title = parse_markdown_table(text)[0] or path.stem
        (ours if has_ours else paper_only).append((f"{path.stem}-title", title, table))
    parts = ["<h1>AdaLoRA reproduction report</h1>", _summary_html(summary, prov["built"]),
             _warnings_html(summary),
             _toc_html([(a, t) for a, t, _ in ours], [(a, t) for a, t, _ in paper_only], decoder_toc),
             '<h2 id="tables">Your results</h2>',
             "<p>Cells: yours as mean ± std over seeds (n = seeds); the paper's rows beneath, with "
             "Δ = yours − paper.</p>"]
    parts += [table for _, _, table in ours] or ["<p><em>No table holds a run of yours.</em></p>"]
    if paper_only:
        parts.append(f'<details class="paper-only" id="paper-only"><summary>Paper only: {len(paper_only)} '
                     "table(s) with no run of yours</summary>" + "".join(t for _, _, t in paper_only) + "</details>")
    parts.append(decoder)
    parts.append('<h2 id="figures">Figures</h2>')
    for heading, pngs in _figure_sections(out_dir):
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        parts += _figures_html(pngs)
    parts.append('<h2 id="notes">Notes</h2>')
    for path in sorted(out_dir.glob("*_notes.md")) + sorted(out_dir.glob("paper_inconsistencies.md")):
        text = read_output(path)
        if text is not None:
            parts.append(f"<h3>{html.escape(path.stem)}</h3><pre>{html.escape(text)}</pre>")
    parts += ['<h2 id="provenance">Provenance</h2>',
              f"<p>This page: git <code>{html.escape(prov['page_git_sha'])}</code></p>", _dl(prov["page_versions"]),
              "<h3>Git sha of the runs (runs per sha)</h3>", _dl(prov["runs_git_sha"]),
              "<h3>Package versions of the runs (runs per version)</h3>", _dl(prov["runs_versions"]),
              "<h3>Precision (trainer.precision, trainer.tf32; runs per setting)</h3>", _dl(prov["runs_precision"]),
              "<h3>Config hashes (runs per hash)</h3>", _dl(prov["config_hashes"])]
    prov_json = json.dumps(prov).replace("</", "<\\/")  # cannot close the script element early
    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            "<title>AdaLoRA reproduction report</title>"
            f"<style>{_STYLE}</style><script>{_CHECK_SCRIPT}</script></head>"
            f"<body data-check=pending>{''.join(parts)}"
            f"<script type=application/json id=provenance-data>{prov_json}</script>"
            "</body></html>\n")
    path = out_dir / INDEX
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
