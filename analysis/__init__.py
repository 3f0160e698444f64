"""Analysis of sweep results: collect run records, compare with the paper, draw figures.

Modules, one job each::

    paper     the paper's reported numbers as tidy data (Tables 1-5, 14, 15, Figure 2 anchors)
    collect   every run directory -> one tidy DataFrame (and the status of every run)
    tables    results tables in the paper's layout, ours beside the paper's numbers
    figures   budget curves, final-rank heatmaps, rank/budget over training
    labels    display names and orderings shared by tables and figures
    report    what a notebook writes: tables, figures, notes

The notebooks in ``analysis/notebooks`` only call these; ``python -m analysis.run_notebooks``
executes them headless.
"""
