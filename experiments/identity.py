"""What a run *is*: the part of its config that can change its result, hashed.

A run directory is found by path (``<sweep>/<task>/<method>/<budget>/seed=<s>``), but a path
does not say which learning rate, step count or data produced the result inside it. So every
record and checkpoint carries an *identity*: the resolved config minus what cannot change the
numbers (output paths, logger, launcher, progress bars, checkpoint cadence), and its hash. The
runner skips a finished run only when the hashes agree and resumes only from a checkpoint with
the same hash; otherwise it stops and names the keys that differ (:class:`IdentityMismatch`).

The config part is a pure function of the config dict, so the analysis can compute it for
records written before it existed (schema 1) from the config they store. A run about to start
adds what the config points at (:func:`current_identity`): the key ``content`` holds the
fingerprints of its local data files and the commits its hub dataset and model resolve to
(``experiments.content``), so a data file edited in place is a different run. A record written
before ``content`` existed (schema 1, or schema 2 without it) has *unknown* content: comparisons
(:func:`comparable`) look only at the content entries both sides know, so such a run is still
skipped or resumed on its config, with a note (:func:`unverified_note`). Hashes are taken over
what a record stores; the analysis therefore keeps records with and without content apart
(docs/identity.md).

Two more pieces of the same idea live here:

- :func:`override_dir` (the ``${override_dir:}`` resolver in ``conf/config.yaml``): every
  command-line override of a key outside the standard path gives the job its own sub-directory,
  ``.../seed=0/trainer.lr=0.005``, in Hydra's ``override_dirname`` format; a multirun over
  ``trainer.lr`` therefore never shares (and overwrites, or falsely skips) one directory.
- :func:`code_version`: package version, git sha and whether the tree was dirty. It is
  recorded beside the hash, not in it: a new commit does not invalidate finished runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_ROOT_TOKEN = "${project_root:}"

# Top-level config keys that never change a run's numbers. Everything else is identity, so a new
# key another part of the suite adds is hashed (fail-safe: at worst a needless "differs").
NON_RESULT_KEYS = frozenset({"sweep_name", "output_root", "force", "run_dir", "logger", "launcher", "sweep", "hydra"})
# Trainer settings that only change logging, progress output or how often state is saved.
NON_RESULT_TRAINER_KEYS = frozenset(
    {"progress", "log_every", "checkpoint_every", "keep_checkpoint", "save_model", "save_best"}
)
# Method config keys that only name or describe the method (display label, description).
NON_RESULT_METHOD_KEYS = frozenset({"label", "description"})
# Keys already in the standard path: overriding them never adds a sub-directory.
PATH_KEYS = frozenset({"task", "method", "budget", "seed"})
# The identity key of what the config points at (experiments.content); never in a stored config.
CONTENT_KEY = "content"
# Keys added after records were written, with the value that is the behaviour before them (the
# default branch; no hub kernels, as transformers 4 loaded models): dropped at that value, so those
# records keep their hash.
_DEFAULT_VALUED_KEYS = {"revision": None, "use_kernels": False}
_MAX_DIRNAME = 150


class IdentityMismatch(ValueError):
    """A run directory holds a result or checkpoint of a different configuration."""


_ROOT_PREFIX = str(PROJECT_ROOT) + "/"


def _normalise(value: Any) -> Any:
    """Paths under the checkout become ``${project_root:}/...``: a moved clone is the same run.

    The common types are tested first: the analysis computes this for every schema-1 record.
    """
    if isinstance(value, str):
        return PROJECT_ROOT_TOKEN + value[len(_ROOT_PREFIX) - 1:] if value.startswith(_ROOT_PREFIX) else value
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, dict | Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _method_hparams(task: Mapping[str, Any], method: Mapping[str, Any]) -> dict[str, Any]:
    """The task's hyperparameters this method uses (default < kind < name), as the runner merges them.

    Only these enter the identity: a new value for another method in the same task file must
    not make this method's finished runs look different.
    """
    from adalora.methods import MethodConfigError, resolve_kind

    name = method.get("name")
    try:
        kind = resolve_kind(method)[1].kind
    except MethodConfigError:  # a method this process cannot import: its name and explicit kind only
        kind = method.get("kind")
    hp = task.get("hparams") or {}
    merged: dict[str, Any] = {}
    for key in ("default", kind, name):
        merged.update(hp.get(key) or {})
    return {k: v for k, v in merged.items() if k not in NON_RESULT_TRAINER_KEYS}


def run_identity(config: Mapping[str, Any], budget: str) -> dict[str, Any]:
    """The result-defining part of a resolved config (``OmegaConf.to_container(cfg, resolve=True)``).

    Trainer and method settings are the effective ones, the task's hyperparameters for this
    method under the explicit values, as the runner merges them: ``trainer.lr=null`` (the task's
    value) and the same value given explicitly are one identity, and a message about a changed
    key shows the value that ran. ``budget`` is the effective budget (``none`` for full_ft/bitfit
    at any level), so the jobs a sweep maps to one directory share one identity. Null means
    "the default" and is dropped, and so are the default protocol's keys (``protocol=paper``,
    ``task.heldout``: ``experiments.protocol.identity_view``), which the records before them lack.
    """
    from experiments.protocol import identity_view

    config = identity_view(config)
    trainer_cfg = config.get("trainer") or {}
    method_cfg = config.get("method") or {}
    hparams = _method_hparams(config.get("task") or {}, method_cfg)
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in NON_RESULT_KEYS:
            continue
        if key == "budget":
            out[key] = budget
        elif key == "task" and isinstance(value, Mapping):
            out[key] = {k: _drop_defaults(v) if k == "dataset" else v
                        for k, v in value.items() if k != "hparams"}
        elif key == "model" and isinstance(value, Mapping):
            out[key] = _drop_defaults(value)
        elif key == "trainer" and isinstance(value, Mapping):
            merged = {**{k: v for k, v in hparams.items() if k in trainer_cfg}, **_set(value)}
            out[key] = {k: v for k, v in merged.items() if k not in NON_RESULT_TRAINER_KEYS}
        elif key == "method" and isinstance(value, Mapping):
            merged = {**{k: v for k, v in hparams.items() if k in method_cfg}, **_set(value)}
            out[key] = {k: v for k, v in merged.items() if k not in NON_RESULT_METHOD_KEYS}
        else:
            out[key] = value
    rest = {k: v for k, v in hparams.items() if k not in trainer_cfg and k not in method_cfg}
    if rest:  # e.g. cls_dropout, a model setting the task file gives per method
        out["hparams"] = rest
    return _normalise(out)


def _set(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _drop_defaults(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return {k: v for k, v in value.items() if not (k in _DEFAULT_VALUED_KEYS and v is _DEFAULT_VALUED_KEYS[k])}


def current_identity(config: Mapping[str, Any], budget: str) -> dict[str, Any]:
    """:func:`run_identity` plus ``content``: what the data files and hub revisions are *now*.

    It reads the files the config names, so it describes a run about to start; a stored
    record's identity is the one it stores (:func:`record_identity`).

    A revision that resolved is identified by its commit alone: its branch or tag name leaves the
    keys, so pinning the commit a branch pointed at (docs/identity.md) keeps the runs' identity.
    """
    from experiments.content import content_of

    identity = run_identity(config, budget)
    content = identity[CONTENT_KEY] = content_of(config)
    for part, block in (("data", (identity.get("task") or {}).get("dataset")), ("model", identity.get("model"))):
        if isinstance(block, dict) and "revision" in content.get(part, {}):
            block.pop("revision", None)
    return identity


def comparable(stored: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both identities with ``content`` cut to the entries both know (unknown is not different).

    A record older than ``content``, a file that is missing now or a revision that cannot be
    resolved offline leaves an entry on one side only; the config keys are compared in full.
    """
    a, b = flatten(stored.get(CONTENT_KEY) or {}), flatten(current.get(CONTENT_KEY) or {})
    common = sorted(set(a) & set(b))

    def cut(identity: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in identity.items() if k != CONTENT_KEY}
        if common:
            out[CONTENT_KEY] = {k: flat[k] for k in common}
        return out

    return cut(stored, a), cut(current, b)


def same_identity(stored: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether a stored identity is the current run's (:func:`comparable`: unknown content aside)."""
    a, b = comparable(stored, current)
    return identity_hash(a) == identity_hash(b)


def unverified_note(path: Path, stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """A line for a skip or resume whose data the stored identity cannot vouch for, else None."""
    known = set(flatten(stored.get(CONTENT_KEY) or {}))
    unknown = sorted(k for k in flatten(current.get(CONTENT_KEY) or {}) if k not in known)
    if not unknown:
        return None
    return (f"[unverified] {path} records no fingerprint of {', '.join(CONTENT_KEY + '.' + k for k in unknown)} "
            "(written before data fingerprints, or not resolvable then); its data cannot be checked against "
            "today's. force=true re-runs it")


def identity_hash(identity: Mapping[str, Any], with_seed: bool = True) -> str:
    """12 hex digits of SHA-256 over the canonical JSON; ``with_seed=False`` names the configuration."""
    payload = {k: v for k, v in identity.items() if with_seed or k != "seed"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def identity_block(identity: Mapping[str, Any]) -> dict[str, Any]:
    """What a record and a checkpoint store: the hash, the seedless group hash and the keys."""
    return {"hash": identity_hash(identity), "group": identity_hash(identity, with_seed=False),
            "keys": dict(identity)}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1}}`` -> ``{"trainer.lr": 1}``."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two identities (missing counts as different)."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, "<unset>") != fb.get(k, "<unset>"))


def describe_difference(what: str, path: Path, stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """The message of an :class:`IdentityMismatch`: which file, which keys, and the ways out."""
    stored, current = comparable(stored, current)
    fs, fc = flatten(stored), flatten(current)
    keys = differing_keys(stored, current)
    shown = ", ".join(f"{k}: {fs.get(k, '<unset>')!r} -> {fc.get(k, '<unset>')!r}" for k in keys[:8])
    more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
    return (f"{path} holds a {what} of a different configuration; differing keys: {shown}{more}. "
            "Ways out: force=true (replace it with this configuration), or keep both with another "
            "sweep_name=... or output_root=...")


def record_identity(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A record's identity: stored (schema >= 2), else computed from its stored config (schema 1).

    A computed one has no ``content``: the files as they are today say nothing about the run.
    """
    block = record.get("identity")
    if isinstance(block, Mapping) and isinstance(block.get("keys"), Mapping):
        return dict(block["keys"])
    config = record.get("config")
    budget = (record.get("run") or {}).get("budget")
    if not config or budget is None:
        return None
    return run_identity(config, budget)


# ---------------------------------------------------------------------------- run directory layout
def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def dirname_overrides(overrides: list[str]) -> list[str]:
    """The overrides that name a sub-directory: not in the standard path, able to change the result
    (``protocol=paper``, the default, does not)."""
    from experiments.protocol import DEFAULT_PROTOCOL

    keep = []
    for override in overrides:
        key = _override_key(override)
        top, _, rest = key.partition(".")
        if key in PATH_KEYS or top in NON_RESULT_KEYS or override == f"protocol={DEFAULT_PROTOCOL}":
            continue
        if top == "trainer" and rest in NON_RESULT_TRAINER_KEYS:
            continue
        keep.append(override)
    return sorted(keep)


def override_dir() -> str:
    """``/k=v,k2=v2`` (Hydra's ``override_dirname`` format) for this job's result-changing overrides.

    Empty outside Hydra (tests composing a config) and for standard runs, which keep the path
    ``<task>/<method>/<budget>/seed=<s>``. ``/`` in a value becomes ``%2F``; an over-long name
    is shortened and made unique with a hash of the full one.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    keep = dirname_overrides(list(HydraConfig.get().overrides.task))
    return "/" + override_dirname(keep) if keep else ""


def override_dirname(overrides: list[str]) -> str:
    """One directory name for ``overrides``: ``k=v,k2=v2`` with ``/`` as ``%2F``; past 150 characters
    (file systems allow 255 bytes) the first 137 and a hash of the whole name, so that two long
    override lists that differ only at their end still get two directories."""
    name = ",".join(overrides).replace("/", "%2F")
    if len(name) > _MAX_DIRNAME:
        name = f"{name[:_MAX_DIRNAME - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


# ---------------------------------------------------------------------------- code version
def code_version() -> dict[str, Any]:
    """Package version, git sha and whether tracked files differ from it (recorded, never hashed)."""
    import importlib.metadata as md

    try:
        version = md.version("adalora")
    except md.PackageNotFoundError:
        version = None
    sha = _git("rev-parse", "HEAD")
    dirty = None
    if sha is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"adalora_version": version, "git_sha": sha, "git_dirty": dirty}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
