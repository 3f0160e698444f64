"""Analysis of sweep results: collect run records, compare with the paper, draw figures.

Modules, one job each::

    paper     the paper's reported numbers as tidy data (Tables 1-5, 14, 15, Figure 2 anchors)
    collect   every run directory -> one tidy DataFrame (and the status of every run)
    tables    results tables in the paper's layout, ours beside the paper's numbers; the cost table
    stats     paired comparisons with a reference method over shared seeds (scipy), Holm's adjustment
    grouping  which runs a cell may pool: one configuration and protocol, distinct seeds
    figures   budget curves, Figure 2, Pareto (metric vs cost), final-rank heatmaps, rank/budget over training
    labels    display names and orderings shared by tables and figures
    report    what a notebook writes: tables, figures, notes

The notebooks in ``analysis/notebooks`` only call these; ``python -m analysis.run_notebooks``
executes them headless.
"""
