"""Writing a table: Markdown, LaTeX, the caption's notes, and the files (UTF-8, whatever the locale)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.labels import is_paper_method, method_label
from analysis.tables.common import ABOVE_MARK, BELOW_MARK, GAP_LIMIT, GAP_MARK, PARAMS, PROTOCOLS
from analysis.tables.formatting import present


def markdown_cell(value: object) -> str:
    """One table cell on one line: ``\\`` and ``|`` escaped, line breaks folded to `` ↵ `` (a failed
    run's reason holds a traceback; a raw newline or bar would end the row or add a column)."""
    lines = [line.strip() for line in str(value).replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return " ↵ ".join(line for line in lines if line).replace("\\", "\\\\").replace("|", "\\|")


def to_markdown(formatted: pd.DataFrame, title: str | None = None) -> str:
    """A GitHub Markdown table (pandas' own needs ``tabulate``, which is not a dependency)."""
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"

    lines = [f"### {title}", ""] if title else []
    lines += [row(list(formatted.columns)), row(["---"] * formatted.shape[1])]
    lines += [row(["" if pd.isna(v) else v for v in values])
              for values in formatted.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "γ": r"$\gamma$", "λ": r"$\lambda$",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "†": r"$\dagger$", "×": r"$\times$", "−": "-"}
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$"}


def to_latex(formatted: pd.DataFrame, title: str | None = None) -> str:
    """A ``table`` float with a booktabs ``tabular`` (``\\usepackage{booktabs}``), pure ASCII.

    Built with ``Styler.to_latex`` (what pandas 3's ``DataFrame.to_latex`` wraps); ``±``, ``Δ``
    and the Greek letters of method names become math, so pdfLaTeX compiles it as is.
    """
    styler = formatted.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    if title:  # the cells are escaped by the Styler; the caption (notes name fields: params.budget_gap) here
        title = "".join(_LATEX_SPECIALS.get(char, char) for char in title)
    text = styler.to_latex(caption=title, hrules=True, position_float="centering",
                           column_format="l" * formatted.shape[1], environment="table")
    for symbol, macro in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, macro)
    return "% needs \\usepackage{booktabs}\n" + text


def table_notes(table: pd.DataFrame) -> list[str]:
    """The caption's notes: the protocol, what the markers mean (only those the table uses)."""
    notes = []
    protocol = table.attrs.get("protocol")
    if protocol:
        notes.append(PROTOCOLS.get(protocol, f"protocol {protocol}") + "; runs of other protocols are never "
                     "pooled into these cells.")
    if table.attrs.get("paired_notes"):
        reference = method_label(table.attrs["reference"], table.attrs.get("labels"))
        notes.append(f"Δ = method − {reference} over the seeds both ran (same model, one configuration each); 95% CI: "
                     f"t-interval of the mean difference (scipy.stats.ttest_rel); p: paired t-test; p (Holm): "
                     f"Holm's step-down adjustment across the table's {table.attrs['comparisons']} comparisons; "
                     f"{ABOVE_MARK} / {BELOW_MARK}: the interval lies above / below 0. Fewer than 2 shared seeds: "
                     "no interval, no p.")
    paired = table.attrs.get("paired")
    if paired is not None and len(paired):  # no comparison (no run shares a seed with the reference): no marks
        reference = method_label(table.attrs["reference"], table.attrs.get("labels"))
        where = table.attrs.get("companion")  # set only where the paired table is written beside this one
        notes.append(f"{ABOVE_MARK} / {BELOW_MARK}: the 95% t-interval of the paired difference with {reference} "
                     "(same seeds, same model) lies above / below 0" + (
                         f"; paired t-test p-values, Holm-adjusted across this table's {len(paired)} comparisons, "
                         f"are in {where}." if where else "."))
    if isinstance(table.columns, pd.MultiIndex) and (PARAMS, "gap") in table.columns:
        if (table[(PARAMS, "gap")].abs() > GAP_LIMIT).any():
            notes.append(f"{GAP_MARK}: the measured trainable count is more than {GAP_LIMIT:.0%} from its budget's "
                         "target (params.budget_gap).")
    if (isinstance(table.columns, pd.MultiIndex) and "paper" in table.columns.get_level_values("field")
            and any(not is_paper_method(m) for m in table.index.get_level_values("method"))):
        notes.append("—: a method the paper does not report.")
    if table.attrs.get("note"):  # what a table's own columns mean (Table 15: which rank its memory is at)
        notes.append(table.attrs["note"])
    missing = table.attrs.get("missing")
    if missing:
        notes.append(f"{missing}: the runs' records lack the field (older records), or no single LoRA row of the "
                     "same task, budget, protocol, model and step count to divide by.")
    return notes


def caption(table: pd.DataFrame, title: str | None) -> str | None:
    """``title`` followed by the table's notes, as one caption (what the LaTeX float shows)."""
    notes = table_notes(table)
    return " ".join([title or "", *notes]).strip() or None


def write_table(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str | None = None,
                latex: bool = False) -> list[Path]:
    """``<stem>.csv`` (numeric, one column per label|field), ``<stem>.md`` (the title, the table, its
    notes) and optionally ``<stem>.tex`` (the title and notes as the caption)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numeric = table.copy()
    if isinstance(numeric.columns, pd.MultiIndex):
        numeric.columns = ["|".join(c) for c in numeric.columns]
    paths = [out_dir / f"{stem}.csv", out_dir / f"{stem}.md"]
    numeric.to_csv(paths[0], encoding="utf-8")
    formatted = present(table)
    notes = table_notes(table)
    paths[1].write_text(to_markdown(formatted, title) + "".join(f"\n{note}\n" for note in notes), encoding="utf-8")
    if latex:
        paths.append(out_dir / f"{stem}.tex")
        paths[-1].write_text(to_latex(formatted, caption(table, title)), encoding="utf-8")
    return paths
