"""Results tables: ours (mean ± std over seeds) in the paper's layout, beside the paper's numbers.

One module per table family, the names below importable from here:

    common        which runs count (``successful``, ``of_protocol``), seed pooling (``aggregate``)
    paper_tables  the paper's Tables 1-5 and 14 on its backbones (``results_table``), with Δ = ours − paper
    model_tables  any other model (or task) in Table 1/2/3's layout (``model_tables``); every task (``summary_table``)
    paired        the comparisons with a reference method behind the ↑/↓ marks (``paired_table``)
    protocols     paper vs heldout protocol (``protocol_table``)
    cost          Table 15, training cost (``cost_table``)
    llm_tables    decoder LLMs: math, commonsense and PEFT's comparison per model (``llm_tables``), the
                  allocation proof of every rank-adaptive decoder run (``allocation_table``)
    formatting    strings in the paper's layout (``format_table``, ``present``)
    output        Markdown, LaTeX, caption notes and the files (``write_table``)

Conventions:

- Only runs with ``status == "success"`` count. ``std`` is the sample std (ddof=1) over seeds,
  so it is NaN for a single seed; ``n`` is the number of seeds. A cell with no run is NaN in
  the numeric table and "" when formatted, never 0.
- ``which`` picks the value at the best eval (``best``, the paper's convention of reporting
  the best dev score) or at the end of training (``final``).
- The paper's numbers, and a Δ against them, stand only beside runs of the model its table
  reports on its tasks (``analysis.paper.PAPER_BACKBONES``); every other run is in its model's table.
"""

from analysis.tables.common import (
    GAP_LIMIT,
    PARAMS,
    PROTOCOLS,
    aggregate,
    has_ours,
    of_protocol,
    protocols_present,
    successful,
)
from analysis.tables.cost import COST_MEASURES, COST_RATIOS, cost_table
from analysis.tables.formatting import format_params, format_table, present
from analysis.tables.llm_tables import (
    LLM_LAYOUTS,
    allocation_summary,
    allocation_table,
    decoder_runs,
    llm_stem,
    llm_tables,
    llm_title,
    scale_table,
)
from analysis.tables.model_tables import (
    TABLE_FAMILIES,
    model_stem,
    model_table,
    model_tables,
    model_title,
    summary_table,
)
from analysis.tables.output import caption, markdown_cell, table_notes, to_latex, to_markdown, write_table
from analysis.tables.paired import (
    PAIRED_COLUMNS,
    UnknownReference,
    check_reference,
    paired_companion,
    paired_table,
    paired_title,
)
from analysis.tables.paper_tables import (
    ABLATION_TABLES,
    MAIN_TABLES,
    OWN_REFERENCES,
    PAIRED_TABLES,
    TABLE_TITLES,
    TABLES,
    results_table,
    table_columns,
)
from analysis.tables.protocols import protocol_table

__all__ = [
    "LLM_LAYOUTS", "allocation_summary", "allocation_table", "decoder_runs", "llm_stem", "llm_tables", "llm_title",
    "scale_table",
    "ABLATION_TABLES", "COST_MEASURES", "COST_RATIOS", "GAP_LIMIT", "MAIN_TABLES", "OWN_REFERENCES", "PAIRED_COLUMNS",
    "PAIRED_TABLES", "PARAMS", "PROTOCOLS", "TABLES", "TABLE_FAMILIES", "TABLE_TITLES", "UnknownReference",
    "aggregate", "caption", "check_reference", "cost_table", "format_params", "format_table", "has_ours",
    "markdown_cell", "model_stem", "model_table", "model_tables", "model_title", "of_protocol", "paired_companion", "paired_table",
    "paired_title", "present", "protocol_table", "protocols_present", "results_table", "successful",
    "summary_table", "table_columns", "table_notes", "to_latex", "to_markdown", "write_table",
]
