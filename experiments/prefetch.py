"""Fill the Hugging Face cache with everything the given sweeps need, for offline compute nodes.

    python -m experiments.prefetch glue squad nlg              # on a login node with internet
    python -m experiments.prefetch glue -o task=glue_rte      # narrowed like the sweep itself
    python -m experiments.prefetch glue --dry-run             # list what would be fetched
    HF_HUB_OFFLINE=1 python -m experiments.prefetch glue      # check that the cache is complete

Every job of each sweep is expanded as Hydra's sweeper would (``experiments.sweeps.expand_sweep``);
each distinct model and task is then loaded through the same functions a run uses
(``load_tokenizer``, ``load_model``, ``Task.load``), so what lands in the cache is exactly
what the runs will ask for, at the revisions the configs name (``task.dataset.revision``,
``model.revision``). Each fetched hub item is printed with the commit its revision resolved to,
the value to pin in the config (docs/identity.md). Exit status 1 when anything could not be fetched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.content import data_content, model_content
from experiments.models import load_model, load_tokenizer
from experiments.runner import PROJECT_ROOT, register_resolvers
from experiments.sweeps import expand_sweep
from experiments.tasks import build_task, get_family

# Overrides that can change which model or data a job needs; the others (seed, budget, lr) cannot.
_RELEVANT_PREFIXES = ("task", "model", "+task", "+model", "++task", "++model")


@dataclass(frozen=True)
class Item:
    """One thing to fetch: a model (tokenizer + weights for a head) or a task's dataset."""

    kind: str  # "model" | "dataset"
    label: str  # what the user reads: hub id, directory or data files
    model: str | None  # JSON of the model config (hashable)
    task: str  # JSON of the task config


def _compose(overrides: Sequence[str]) -> DictConfig:
    return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def _model_label(model: dict) -> str:
    source = model.get("source")
    if source == "hub":
        return str(model.get("pretrained"))
    if source == "package":
        return f"package {model.get('package')}"
    return f"{model.get('name')} (built from a config)"


def _dataset_label(task: dict) -> str:
    return _source_label(task["name"], task.get("dataset") or {})


def _source_label(task_name: str, dataset: dict) -> str:
    """A data set as the user reads it: hub id (config), its URLs, or the task's local files."""
    files = dataset.get("data_files")
    if files:
        paths = [str(p) for value in files.values() for p in ([value] if isinstance(value, str) else value)]
        return " ".join(paths) if all(p.startswith(("https://", "http://")) for p in paths) else f"{task_name}: local files"
    name = dataset.get("name")
    return f"{dataset.get('path')}" + (f" ({name})" if name else "")


def items_for_sweeps(sweeps: Sequence[str], overrides: Sequence[str]) -> list[Item]:
    """The distinct models and datasets the jobs of ``sweeps`` (narrowed by ``overrides``) use."""
    register_resolvers()
    seen: dict[tuple, Item] = {}
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        for sweep in sweeps:
            base = _compose([f"sweep={sweep}", *overrides])
            params = OmegaConf.to_container(base.hydra.sweeper.get("params") or {}, resolve=False)
            jobs = expand_sweep(params, [f"sweep={sweep}", *overrides])
            relevant = {tuple(o for o in job if o.startswith(_RELEVANT_PREFIXES) or o.startswith("sweep="))
                        for job in jobs}
            for job in sorted(relevant):
                cfg = _compose(list(job))
                model = OmegaConf.to_container(cfg.model, resolve=True)
                task = OmegaConf.to_container(cfg.task, resolve=True)
                model_json, task_json = OmegaConf.to_yaml(model), OmegaConf.to_yaml(task)
                seen.setdefault(("model", model_json, task.get("family")),
                                Item("model", _model_label(model), model_json, task_json))
                seen.setdefault(("dataset", task_json), Item("dataset", _dataset_label(task), None, task_json))
    return list(seen.values())


def _configs(item: Item) -> tuple[dict, dict | None]:
    task = OmegaConf.to_container(OmegaConf.create(item.task))
    return task, None if item.model is None else OmegaConf.to_container(OmegaConf.create(item.model))


def revision_text(item: Item, resolved: bool) -> str:
    """`` @ <revision>`` of a hub item, with ``= <commit>`` once ``resolved`` (after fetching); else ''. A task
    that reads more data sets (a causal-LM task's eval sets) lists each after it: ``; <name>: <id> @ <revision>``."""
    task, model = _configs(item)
    if item.kind == "dataset":
        more = get_family(str(task.get("family"))).more_datasets(task)
        return _data_revision(task.get("dataset") or {}, resolved) + "".join(
            f"; {name}: {_source_label(task['name'], cfg)}{_data_revision(cfg, resolved)}" for name, cfg in more.items())
    cfg = model or {}
    if cfg.get("source") != "hub":
        return ""
    sha = model_content(cfg).get("revision") if resolved else None
    return f" @ {cfg.get('revision') or 'main'}" + (f" = {sha}" if sha else "")


def _data_revision(cfg: dict, resolved: bool) -> str:
    """`` @ <revision>[ = <commit>]`` of a hub data set; '' for files."""
    if cfg.get("data_files") or cfg.get("builder") or not cfg.get("path"):
        return ""
    sha = data_content(cfg).get("revision") if resolved else None
    return f" @ {cfg.get('revision') or 'main'}" + (f" = {sha}" if sha else "")


def fetch(item: Item) -> None:
    """Load ``item`` the way a run does, which downloads it into the HF cache if missing."""
    task_cfg, model_cfg = _configs(item)
    task = build_task(task_cfg)
    if item.kind == "dataset":
        task.load()
        return
    load_tokenizer(model_cfg)
    load_model(model_cfg, task.head, num_labels=task.num_labels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep names (conf/sweep/<name>.yaml)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="Hydra override that narrows the sweeps, as on the run command line (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="list the items without loading them")
    args = parser.parse_args(argv)
    items = items_for_sweeps(args.sweeps, args.override)
    # Models first: one per (model, head); then datasets, in a stable order.
    items.sort(key=lambda i: (i.kind != "model", i.label))
    failed = []
    for item in tqdm(items, desc="prefetch", disable=args.dry_run):
        if args.dry_run:
            print(f"{item.kind:8s} {item.label}{revision_text(item, resolved=False)}")
            continue
        try:
            fetch(item)
            tqdm.write(f"[ok]      {item.kind:8s} {item.label}{revision_text(item, resolved=True)}")
        except Exception as err:  # noqa: BLE001 - report every item, then fail
            failed.append(item)
            tqdm.write(f"[missing] {item.kind:8s} {item.label}: {type(err).__name__}: {str(err).splitlines()[0]}")
    if failed:
        print(f"{len(failed)} of {len(items)} items could not be fetched (see above)", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(f"all {len(items)} items are in the cache; compute nodes can run with HF_HUB_OFFLINE=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
