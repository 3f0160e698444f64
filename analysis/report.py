"""What a notebook produces: tables, figures and notes, written to one folder and shown inline.

The notebooks stay a list of calls; this keeps the "save the file, then show it" and "say
why something is missing instead of failing" steps in one place. Notes are also written to
``<out_dir>/<name>_notes.md`` so a headless run leaves a record of what it could not draw.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display
from matplotlib.figure import Figure

from analysis.figures import save_figure
from analysis.labels import method_label
from analysis.tables import has_ours, paired_companion, present, to_markdown, write_table


class Report:
    def __init__(self, out_dir: str | Path, name: str) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.notes_path = self.out / f"{name}_notes.md"
        self.notes_path.unlink(missing_ok=True)
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Record why an output is missing or partial (no runs yet, nothing to draw)."""
        self.notes.append(text)
        self.notes_path.write_text("".join(f"- {n}\n" for n in self.notes), encoding="utf-8")
        display(Markdown(f"> **Note:** {text}"))

    def table(self, table: pd.DataFrame, stem: str, title: str, latex: bool = False) -> None:
        write_table(table, self.out, stem, title, latex=latex)
        display(Markdown(to_markdown(present(table), title)))

    def figure(self, fig: Figure, stem: str) -> None:
        png, _ = save_figure(fig, self.out / stem)
        display(Image(filename=str(png), width=800))

    def results(self, table: pd.DataFrame, stem: str, title: str) -> None:
        """A results table as ``<stem>_<which>`` and, beside a best-eval table, its paired comparisons
        (``<stem>_paired``); where no method shares a seed with the reference, a note says so."""
        companion = paired_companion(table, stem, title)
        self.table(table, f"{stem}_{table.attrs['which']}", title, latex=True)
        if companion is not None:
            self.table(*companion, latex=True)
        elif table.attrs["which"] == "best" and has_ours(table):
            self.note(f"{stem}_paired: not written, no method shares a seed with the reference "
                      f"{method_label(table.attrs['reference'], table.attrs['labels'])} in this table")
