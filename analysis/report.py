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
from analysis.tables import present, to_markdown, write_table


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
