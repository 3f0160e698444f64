"""One report page, ``<out_dir>/index.html``: every table and figure ``make figures`` wrote, with provenance.

The page is static (no server, no network: it opens from disk) and embeds what the notebooks
wrote: each Markdown table (``<stem>.md``, rendered as an HTML table), each PNG figure, the
notes on what could not be drawn, and the provenance of the runs: git sha(s), package
versions, training precision (``trainer.precision`` / ``trainer.tf32``), config hashes (stored,
or computed from the stored config for schema-1 records), and the status of every run.

A script on the page checks itself once loaded: every image decoded (``complete`` and a
non-zero ``naturalWidth``) and every table has rows. It writes the verdict to ``<body>``'s
``data-check`` ("ok" or what failed), which the browser test reads from Chromium's DOM dump.
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

from analysis.collect import load_records, run_status
from analysis.paths import REPO_ROOT
from experiments.identity import identity_hash, record_identity

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
  document.body.dataset.check = problems.length ? "failed: " + problems.join(", ") : "ok";
});
"""

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }
tr.paper td { color: #555; background: #f6f6f6; }
.scroll { overflow-x: auto; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; }
code { background: #f3f3f3; padding: 0 3px; }
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


def _table_html(stem: str, text: str) -> str:
    title, header, rows = parse_markdown_table(text)
    if not rows:  # nothing to show: say so rather than draw an empty table
        return f"<h3>{html.escape(title or stem)}</h3><p><em>no rows</em></p>"
    source = header.index("Source") if "Source" in header else None
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr{" class=paper" if source is not None and row[source] == "paper" else ""}>'
        + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows)
    return (f'<h3 id="{html.escape(stem)}-title">{html.escape(title or stem)}</h3>'
            f'<p><a href="{html.escape(stem)}.md">{html.escape(stem)}.md</a> · '
            f'<a href="{html.escape(stem)}.csv">.csv</a></p>'
            f'<div class="scroll"><table id="{html.escape(stem)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _table_key(path: Path) -> tuple[int, str]:
    prefix = next((i for i, p in enumerate(TABLE_ORDER) if path.stem == p or path.stem.startswith(f"{p}_")),
                  len(TABLE_ORDER))
    return prefix, path.stem


def _figure_sections(out_dir: Path) -> list[tuple[str, list[Path]]]:
    pngs = sorted(out_dir.glob("*.png"))
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
    for _, record, _ in load_records(results_root):
        if record is None:
            continue
        env = record.get("env") or {}
        shas[env.get("git_sha") or "unknown"] += 1
        for name, version in (env.get("versions") or {}).items():
            versions[f"{name}=={version}"] += 1
        identity = record_identity(record)  # stored (schema 2) or computed from the stored config (schema 1)
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


def write_index(results_root: str | Path, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/index.html`` from the files in ``out_dir`` and the runs under ``results_root``."""
    out_dir = Path(out_dir)
    prov = provenance(results_root)
    status = run_status(results_root)
    counts = ", ".join(f"{n} {s}" for s, n in status["status"].value_counts().items()) or "no runs"
    parts = ["<h1>AdaLoRA reproduction: tables and figures</h1>",
             f"<p>Runs under <code>{html.escape(str(results_root))}</code>: {len(status)} ({html.escape(counts)}). "
             f"Built {prov['built']}. Cells: ours as mean ± std over seeds (n = seeds), the paper's row beneath with "
             "Δ = ours − paper.</p>",
             '<nav><a href="#tables">Tables</a> · <a href="#figures">Figures</a> · <a href="#notes">Notes</a> · '
             '<a href="#provenance">Provenance</a></nav>',
             '<h2 id="tables">Tables</h2>']
    for path in sorted(out_dir.glob("*.md"), key=_table_key):
        if path.stem.endswith("_notes") or path.stem == "paper_inconsistencies":
            continue
        parts.append(_table_html(path.stem, path.read_text()))
    parts.append('<h2 id="figures">Figures</h2>')
    for heading, pngs in _figure_sections(out_dir):
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        parts += [f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}" loading="eager">'
                  f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in pngs]
    parts.append('<h2 id="notes">Notes</h2>')
    for path in sorted(out_dir.glob("*_notes.md")) + sorted(out_dir.glob("paper_inconsistencies.md")):
        parts.append(f"<h3>{html.escape(path.stem)}</h3><pre>{html.escape(path.read_text())}</pre>")
    parts += ['<h2 id="provenance">Provenance</h2>',
              f"<p>This page: git <code>{html.escape(prov['page_git_sha'])}</code></p>", _dl(prov["page_versions"]),
              "<h3>Git sha of the runs (runs per sha)</h3>", _dl(prov["runs_git_sha"]),
              "<h3>Package versions of the runs (runs per version)</h3>", _dl(prov["runs_versions"]),
              "<h3>Precision (trainer.precision, trainer.tf32; runs per setting)</h3>", _dl(prov["runs_precision"]),
              "<h3>Config hashes (runs per hash)</h3>", _dl(prov["config_hashes"])]
    prov_json = json.dumps(prov).replace("</", "<\\/")  # cannot close the script element early
    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>AdaLoRA reproduction report</title>"
            f"<style>{_STYLE}</style><script>{_CHECK_SCRIPT}</script></head>"
            f"<body data-check=pending>{''.join(parts)}"
            f"<script type=application/json id=provenance-data>{prov_json}</script>"
            "</body></html>\n")
    path = out_dir / INDEX
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
