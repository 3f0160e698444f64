"""Every job of a sweep file, expanded and resolved by the harness's own ``resolve()``, once per test RUN.

A sweep is expanded the way Hydra's basic sweeper does it (experiments.sweeps.expand_sweep): parsed by
Hydra's override parser (so ``a,b``, ``glob(...)`` and ``range(...)`` all work), then the cartesian
product. A real ``compose`` costs ~0.2 s here, too slow for the thousands of jobs of all sweeps, so each
sweep is composed once and a job's overrides are applied to that config with OmegaConf: a config-group
choice (``task=glue_rte``) swaps in the group file, any other key is set to Hydra's parse of its value
(tests/test_sweeps.py::test_shortcut_equals_real_compose checks that against real composes, run without the
test session's parse caches: tests/parse_caches.py).

Several test files read the same sweeps (test_sweeps, test_protocol, test_ablations, test_baselines), and
``make test`` runs files in two xdist workers: the ``sweep_jobs`` fixture (tests/conftest.py) expands a
sweep in whichever worker asks first and the others read that worker's result, a JSON file in the test
run's shared temporary folder (:func:`shared_sweep_jobs`), instead of resolving every job again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.runner import PROJECT_ROOT, effective_budget, register_resolvers, resolve
from experiments.sweeps import expand_sweep
from tests.conftest import built_once, compose

CONF = PROJECT_ROOT / "conf"
GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()}
ROOT_NODES = OmegaConf.load(CONF / "config.yaml")  # the entry config's own values, under every group file
register_resolvers()


@dataclass(frozen=True)
class Job:
    overrides: tuple[str, ...]  # as Hydra's sweeper hands them to the job (after sweep=<name>)
    task: str
    method: str
    budget: str  # cfg.budget.name, before effective_budget
    seed: int
    run_dir: str
    identity: str  # the resolved run config, minus the sweep's name and the budget's label
    lr: float | None = None  # an explicit trainer.lr (the lr_search_* sweeps), part of what a run is
    effective: str = ""  # effective_budget of the job's method config (a yaml-only row has no registered name)
    model: str | None = None  # the model of a sweep that lists several (llm_math): part of what a run is

    @property
    def key(self) -> tuple:
        key = (self.task, self.method, self.effective, self.seed)
        key = key if self.lr is None else (*key, self.lr)
        return key if self.model is None else (*key, self.model)

    @property
    def fixed_size(self) -> bool:
        return self.effective == "none"


# ------------------------------------------------------------------------------------- expansion
def sweep_compose(sweep: str, overrides: list[str] = ()) -> DictConfig:
    return compose([f"sweep={sweep}", *overrides], return_hydra_config=True)


@functools.cache
def _group_option(group: str, option: str) -> DictConfig | None:
    """A group file, when swapping it in is exactly what Hydra does (no defaults list, no package header)."""
    path = CONF / group / f"{option}.yaml"
    if "@package" in path.read_text():
        return None
    node = OmegaConf.load(path)
    return None if "defaults" in node else node


@functools.cache
def _parsed(override: str) -> Override:
    """Hydra's parse of one override; the jobs of a sweep repeat the same few (``task=glue_rte``, ``seed=0``)."""
    return OverridesParser.create().parse_overrides([override])[0]


def _split(overrides: list[str]) -> tuple[tuple[str, ...], list[tuple[str, object]]] | None:
    """(config-group choices, other ``key=value`` pairs with Hydra's parse of the value), or None
    where only a real compose is faithful (``+``/``~`` overrides, package renames, group files with
    a defaults list)."""
    groups, values = [], []
    for override in map(_parsed, overrides):
        key = override.get_key_element()
        if override.type != OverrideType.CHANGE or override.package is not None:
            return None
        if key in GROUPS:
            if _group_option(key, override.get_value_element_as_str()) is None:
                return None
            groups.append(f"{key}={override.get_value_element_as_str()}")
        else:
            values.append((key, override.value()))
    return tuple(groups), values


@functools.cache
def _group_node(sweep: str, key: str, option: str) -> DictConfig:
    """The group file ``key=option`` as a job of ``sweep`` sees it: merged over conf/config.yaml's own node of that
    group (``model.use_kernels``), which comes first (``_self_``), and under the sweep file's own node of it
    (demo_gpu's ``task.max_seq_length``): the sweep file is the defaults list's last entry, a ``_global_`` package,
    so its values win. Merged once per sweep and file (a sweep's jobs swap in the same few files); inserting it
    into a config copies it, so no job edits it."""
    sweep_raw = OmegaConf.load(CONF / "sweep" / f"{sweep}.yaml")
    return OmegaConf.merge(ROOT_NODES.get(key) or {}, _group_option(key, option), sweep_raw.get(key) or {})


def _swap_groups(cfg: DictConfig, groups: tuple[str, ...], sweep: str, current: dict[str, str]) -> None:
    """Swap the group files of ``groups`` into ``cfg`` (:func:`_group_node`), what Hydra's defaults list does for a
    plain group file; ``current`` holds the choices ``cfg`` has now, so a group a job keeps is not copied again (the
    values a previous job set in it are set again by this job: every job of a sweep sets the same keys)."""
    with open_dict(cfg):
        for key, option in (choice.split("=", 1) for choice in groups):
            if current.get(key) != option:
                cfg[key] = _group_node(sweep, key, option)
                current[key] = option


def _slim(cfg: DictConfig) -> DictConfig:
    """The config with only the part of the hydra node that places the job (copying it all is slow)."""
    slim = OmegaConf.create({k: v for k, v in cfg.items_ex(resolve=False) if k != "hydra"})
    slim.hydra = {"sweep": OmegaConf.to_container(cfg.hydra.sweep, resolve=False)}
    return slim


def job_of(cfg: DictConfig, overrides: list[str]) -> Job:
    """The job as the harness resolves it (``resolve`` raises ConfigError on a job that could not run); its
    identity is the config ``resolve`` produced (resolved once, not converted a second time here)."""
    config = resolve(cfg).config
    run_dir = str(config["run_dir"])
    hydra_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    assert hydra_dir == Path(run_dir), f"Hydra's job dir {hydra_dir} != run_dir {run_dir} ({overrides})"
    identity = {k: v for k, v in config.items() if k not in ("sweep_name", "run_dir", "budget")}
    identity["effective_budget"] = effective_budget(config["method"], config["budget"]["name"])
    return Job(tuple(overrides), config["task"]["name"], config["method"]["name"], config["budget"]["name"],
               int(config["seed"]), run_dir, json.dumps(identity, sort_keys=True, default=str), config["trainer"]["lr"],
               identity["effective_budget"], config["model"]["name"] if any(o.startswith("model=") for o in overrides) else None)


def expand_jobs(sweep: str) -> tuple[Job, ...]:
    """Every job of a sweep: one compose, then each job's overrides applied with OmegaConf to one config (a group
    file swapped in where the job's choice differs from the previous job's, the other values set in place: the
    jobs of a cartesian product all set the same keys, so no job sees a value another job set); a real compose
    where that is not faithful."""
    jobs = []
    base = sweep_compose(sweep)
    assert base.hydra.mode == RunMode.MULTIRUN, f"{sweep}: set hydra.mode: MULTIRUN"
    configs: dict[tuple, tuple[DictConfig, dict[str, str]]] = {}  # per set of keys the jobs set: one per sweep
    for overrides in expand_sweep(base.hydra.sweeper.params, []):
        split = _split(overrides)
        if split is None:
            jobs.append(job_of(sweep_compose(sweep, overrides), overrides))
            continue
        groups, values = split
        keys = (tuple(choice.split("=", 1)[0] for choice in groups), tuple(key for key, _ in values))
        if keys not in configs:
            configs[keys] = _slim(base), {}
        cfg, current = configs[keys]
        _swap_groups(cfg, groups, sweep, current)
        for key, value in values:
            OmegaConf.update(cfg, key, value, merge=False, force_add=False)
        jobs.append(job_of(cfg, overrides))
    return tuple(jobs)


@functools.cache
def shared_sweep_jobs(folder: Path, sweep: str) -> tuple[Job, ...]:
    """:func:`expand_jobs`, once per test run: the first worker to ask expands the sweep (holding the lock of
    ``folder/<sweep>``) and writes its jobs as JSON; every other worker, and every later call, reads them.
    A failed expansion writes nothing, so the next caller expands again and fails the same way."""
    path = folder / sweep / "jobs.json"
    with built_once(folder / sweep) as needed:
        if needed:
            jobs = expand_jobs(sweep)
            path.write_text(json.dumps([dataclasses.asdict(job) for job in jobs]))
            return jobs
    return tuple(Job(**{**fields, "overrides": tuple(fields["overrides"])}) for fields in json.loads(path.read_text()))
