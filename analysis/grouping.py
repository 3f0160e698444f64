"""Which runs a table cell may pool: one configuration, its distinct seeds, nothing else.

A table cell is labelled task x method x budget, but runs with that label can differ in any
other setting (learning rate, steps, model, data): an ad-hoc run beside a sweep's, or two sweeps
with different trainer settings. Pooling them would report a mean over different experiments.
So a cell pools only the runs of one *configuration*: the same model and the same seedless
identity hash (``config_group``, ``experiments.identity``). A label with more than one
configuration is a *conflict*: it is left out of the tables (never averaged) and listed, with
the keys that differ, in ``run_status``'s ``conflict`` column.

Within a configuration, ``n`` counts distinct seeds: a seed run twice (two sweeps with the same
configuration) counts once, with the mean of its repeats (identical on a deterministic device).

Figures drawn from records (the final-rank heatmap, learning curves) follow the same rule through
:func:`configurations` and :func:`one_configuration`: one configuration per drawn mean, one
record per seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from experiments.identity import differing_keys, identity_hash, stored_identity

# A cell's label: the protocol is part of it, so runs selected and reported under different protocols
# are never pooled (nor listed as a conflict: each protocol has its own cells).
LABEL_KEYS = ("task", "method", "budget", "protocol")
CONFIG_KEYS = ("model", "config_group")  # with the label: one configuration
DEFAULT_PROTOCOL = "paper"  # a record without run.protocol predates it and was evaluated the paper's way


def record_protocol(record: Mapping[str, Any]) -> str:
    return (record.get("run") or {}).get("protocol") or DEFAULT_PROTOCOL


def _with_config_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Frames built by hand (no model / config_group / seed / protocol column) group as one configuration
    per label, under the paper's protocol."""
    fill = {key: (runs[key].astype(object).where(runs[key].notna(), "") if key in runs else "") for key in CONFIG_KEYS}
    if "seed" not in runs:
        fill["seed"] = range(len(runs))
    if "protocol" not in runs:
        fill["protocol"] = DEFAULT_PROTOCOL
    return runs.assign(**fill)


def conflicting_labels(runs: pd.DataFrame, keys: Sequence[str] = LABEL_KEYS) -> pd.DataFrame:
    """The ``keys`` labels whose runs come from more than one configuration, with how many."""
    runs = _with_config_columns(runs)
    configs = runs.drop_duplicates([*keys, *CONFIG_KEYS]).groupby(list(keys), sort=False).size()
    out = configs[configs > 1].rename("configurations").reset_index()
    return out


def per_seed(runs: pd.DataFrame, value: str, keys: Sequence[str]) -> pd.DataFrame:
    """One row per ``keys`` x seed: the mean of ``value`` over the seed's repeats, the median
    ``trainable_params`` and ``budget_gap``, and the configuration's model; conflicting labels are
    warned about and left out. What :func:`pool_seeds` averages and ``analysis.stats`` pairs."""
    runs = _with_config_columns(runs)
    if "budget_gap" not in runs:
        runs = runs.assign(budget_gap=float("nan"))
    conflicts = conflicting_labels(runs, keys)
    if len(conflicts):
        labels = ["/".join(str(v) for v in row) for row in conflicts[list(keys)].itertuples(index=False)]
        warnings.warn(f"not pooled, different configurations under one label (see run_status 'conflict'): "
                      f"{', '.join(labels)}", stacklevel=3)
        clash = pd.MultiIndex.from_frame(conflicts[list(keys)])
        runs = runs[~pd.MultiIndex.from_frame(runs[list(keys)]).isin(clash)]
    return runs.groupby([*keys, "seed"], sort=False).agg(
        value=(value, "mean"), trainable_params=("trainable_params", "median"),
        budget_gap=("budget_gap", "median"), model=("model", "first")).reset_index()


def pool_seeds(runs: pd.DataFrame, value: str, keys: Sequence[str]) -> pd.DataFrame:
    """Mean, std (ddof=1) and distinct-seed count ``n`` of ``value`` per ``keys``; conflicts left out.

    Also the median ``trainable_params`` and ``budget_gap``. A conflicting label is warned about and dropped.
    """
    grouped = per_seed(runs, value, keys).groupby(list(keys), sort=False)
    out = grouped["value"].agg(mean="mean", std="std", n="count")
    out["trainable_params"] = grouped["trainable_params"].median()
    out["budget_gap"] = grouped["budget_gap"].median()
    return out.reset_index()


def conflict_notes(rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """For each run row (label keys, status, ``model``, ``config_group``, ``identity``): a note naming
    the keys in which other successful configurations of its label differ, or None."""
    by_label: dict[tuple, dict[tuple, Mapping[str, Any] | None]] = {}
    for row in rows:
        if row.get("status") == "success":
            config = (row.get("model") or "", row.get("config_group") or "")
            by_label.setdefault(tuple(row.get(k) for k in LABEL_KEYS), {}).setdefault(config, row.get("identity"))
    notes: list[str | None] = []
    for row in rows:
        label = tuple(row.get(k) for k in LABEL_KEYS)
        configs = by_label.get(label, {})
        mine = (row.get("model") or "", row.get("config_group") or "")
        if row.get("status") != "success" or len(configs) < 2:
            notes.append(None)
            continue
        differ = difference(configs[mine], [ident for other, ident in configs.items() if other != mine])
        notes.append(f"{len(configs)} configurations of {'/'.join(map(str, label))}, not pooled; "
                     f"they differ in: {differ}")
    return notes


def difference(mine: Mapping[str, Any] | None, others: Sequence[Mapping[str, Any] | None]) -> str:
    """The identity keys (seed aside) in which ``others`` differ from ``mine``; none means the
    configurations differ in their model only, as records without a stored configuration do."""
    def seedless(identity: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (identity or {}).items() if k != "seed"}

    keys = sorted({k for other in others for k in differing_keys(seedless(mine), seedless(other))})
    return ", ".join(keys) if keys else "model (the records store no configuration)"


# ---------------------------------------------------------------------------- records (figures)
def record_identity(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """``experiments.spec.record_identity``, importing it only for a schema-1 record: the identity a record stores
    is read as data, and only computing an old record's identity from its config needs the method and task
    registries (torch, transformers: seconds in every analysis process and notebook kernel)."""
    stored = stored_identity(record)
    if stored is not None:
        return stored
    from experiments.spec import record_identity as computed_identity

    return computed_identity(record)


def record_label(record: Mapping[str, Any]) -> tuple:
    """A record's ``LABEL_KEYS`` values (the protocol defaulted as ``run_status`` shows it)."""
    return (*(record["run"].get(k) for k in LABEL_KEYS[:-1]), record_protocol(record))


def record_configuration(record: Mapping[str, Any]) -> tuple[str, str]:
    """(model, ``config_group``) of a run record: the key its runs must share to be averaged."""
    identity = record_identity(record)
    model = (record.get("run") or {}).get("model") or ""
    return model, identity_hash(identity, with_seed=False) if identity is not None else ""


def configurations(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Records by :func:`record_configuration`, in first-seen order, one record per seed (the first:
    a seed run twice in one configuration gives the same result on a deterministic device)."""
    by_config: dict[tuple[str, str], dict[Any, Mapping[str, Any]]] = {}
    for record in records:
        by_config.setdefault(record_configuration(record), {}).setdefault(record["run"]["seed"], record)
    return {config: list(seeds.values()) for config, seeds in by_config.items()}


def one_configuration(records: Sequence[Mapping[str, Any]], what: str,
                      config_group: str | None = None) -> list[Mapping[str, Any]]:
    """The records of ``what`` (e.g. "glue_rte/adalora/glue_0.3m") if they are one configuration,
    one per seed; ``config_group`` picks one of several. Several configurations are an error that
    names the keys in which they differ: a figure must not average different experiments."""
    groups = configurations(records)
    if config_group is not None:
        groups = {config: recs for config, recs in groups.items() if config[1] == config_group}
        if not groups:
            raise LookupError(f"{what}: no run of configuration config_group={config_group!r}")
    if len(groups) <= 1:
        return next(iter(groups.values()), [])
    first, *others = (record_identity(recs[0]) for recs in groups.values())
    raise ValueError(
        f"{what}: runs of {len(groups)} configurations, which must not be averaged; they differ in: "
        f"{difference(first, others)}. Pick one with "
        f"config_group= one of {[group for _, group in groups]} (run_status's config_group column), "
        "or pass only the runs of one configuration"
    )


def one_configuration_per_label(records: Sequence[Mapping[str, Any]], what: str) -> list[Mapping[str, Any]]:
    """:func:`one_configuration` for every task x method x budget among ``records``, concatenated; a
    label with several configurations is left out with a warning that names what differs, as in
    :func:`pool_seeds` (a figure with several labels still draws the others)."""
    labels: dict[tuple, list[Mapping[str, Any]]] = {}
    for record in records:
        labels.setdefault(record_label(record), []).append(record)
    kept: list[Mapping[str, Any]] = []
    for label, recs in labels.items():
        try:
            kept += one_configuration(recs, f"{what} {'/'.join(map(str, label))}")
        except ValueError as err:
            warnings.warn(f"not drawn: {err}", stacklevel=3)
    return kept
