"""What a run *is*: the part of its config that can change its result, hashed and compared.

A run directory is found by path (``<sweep>/<task>/<method>/<budget>/seed=<s>``), but a path
does not say which learning rate, step count or data produced the result inside it. So every
record and checkpoint carries an *identity*: the resolved config minus what cannot change the
numbers (output paths, logger, launcher, progress bars, checkpoint cadence), and its hash. The
runner skips a finished run only when the hashes agree and resumes only from a checkpoint with
the same hash; otherwise it stops and names the keys that differ (:class:`IdentityMismatch`).

What the identity *holds* is computed in ``experiments/spec.py`` (the one place the task's
hyperparameters are merged); this module hashes and compares identities. The key ``content``
holds the fingerprints of a run's local data files and the commits its hub dataset and model
resolve to (``experiments.content``). A record written before ``content`` existed has *unknown*
content: comparisons (:func:`comparable`) look only at the content entries both sides know, so
such a run is still skipped or resumed on its config, with a note (:func:`unverified_note`).
Hashes are taken over what a record stores (docs/identity.md).

Two more pieces of the same idea live here:

- :func:`override_dirname`: the sub-directory a job's result-changing command-line overrides
  give it (``.../seed=0/trainer.lr=0.005``, Hydra's ``override_dirname`` format), cut by bytes.
- :func:`code_version`: package version, git sha and whether the tree was dirty, and
  :func:`external_code`: the distribution version or source hash of a method's own module. They
  are recorded beside the hash, not in it: a new commit does not invalidate finished runs.
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

# Trainer settings that only change logging, progress output or how often state is saved.
NON_RESULT_TRAINER_KEYS = frozenset(
    {"progress", "log_every", "checkpoint_every", "keep_checkpoint", "save_model", "save_best"}
)
# The identity key of what the config points at (experiments.content); never in a stored config.
CONTENT_KEY = "content"
# Keys added after records were written, with the value that is the behaviour before them (the
# default branch; no hub kernels, as transformers 4 loaded models; no gradient checkpointing; linear decay):
# dropped at that value, so those records keep their hash.
_DEFAULT_VALUED_KEYS = {"revision": None, "use_kernels": False, "gradient_checkpointing": False,
                       "lr_schedule": "linear"}
_MAX_DIRNAME = 150


class IdentityMismatch(ValueError):
    """A run directory holds a result or checkpoint of a different configuration."""


_ROOT_PREFIX = str(PROJECT_ROOT) + "/"


def normalise_paths(value: Any) -> Any:
    """Paths under the checkout become ``${project_root:}/...``: a moved clone is the same run.

    The common types are tested first: the analysis computes this for every schema-1 record.
    """
    if isinstance(value, str):
        return PROJECT_ROOT_TOKEN + value[len(_ROOT_PREFIX) - 1:] if value.startswith(_ROOT_PREFIX) else value
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, dict | Mapping):
        return {str(k): normalise_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise_paths(v) for v in value]
    return value


def set_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The set (non-null) values: null means "the default" in an identity."""
    return {k: v for k, v in values.items() if v is not None}


def without_null_defaults(value: Any) -> Any:
    """``value`` without the keys added after records were written, where they hold the value that is the
    behaviour before them (``_DEFAULT_VALUED_KEYS``)."""
    if not isinstance(value, Mapping):
        return value
    return {k: v for k, v in value.items() if not (k in _DEFAULT_VALUED_KEYS and v is _DEFAULT_VALUED_KEYS[k])}


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


def stored_identity(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The identity keys a record of schema >= 2 stores (its :func:`identity_block`), read as data; None for a
    record that stores none (schema 1), whose identity ``experiments.spec.record_identity`` computes."""
    block = record.get("identity")
    if isinstance(block, Mapping) and isinstance(block.get("keys"), Mapping):
        return dict(block["keys"])
    return None


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


# ---------------------------------------------------------------------------- run directory layout
def override_dirname(overrides: list[str]) -> str:
    """One directory name for ``overrides``: ``k=v,k2=v2`` with ``/`` as ``%2F``; past 150 *bytes* (file
    systems allow 255 bytes, and a CJK character takes 3) its first bytes, cut at a character boundary, and
    a hash of the whole name, so that two long override lists that differ only at their end still get two
    directories."""
    name = ",".join(overrides).replace("/", "%2F")
    if len(name.encode()) > _MAX_DIRNAME:
        head = name.encode()[:_MAX_DIRNAME - 13].decode(errors="ignore")
        name = f"{head}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
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


def external_code(module: str | None) -> dict[str, Any] | None:
    """What a method's own module is, as :func:`code_version` says what the suite is: its distribution's
    name and version where installed, else a SHA-256 over its source files (the package directory's
    ``*.py``, or the one file), so that editing it shows in the record. Imports nothing new: the module
    was imported to run (``sys.modules``); None for the suite's own kinds."""
    import importlib.metadata as md
    import sys

    if not module:
        return None
    top = module.split(".")[0]
    loaded = sys.modules.get(module)
    dists = md.packages_distributions().get(top) or []
    if dists:
        return {"module": module, "distribution": dists[0], "version": md.version(dists[0])}
    origin = Path(getattr(loaded, "__file__", "") or "")
    if not origin.is_file():
        return {"module": module, "source_sha256": None}
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(origin.parent)).encode() + b"\0" + path.read_bytes())
    return {"module": module, "source_sha256": digest.hexdigest()}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
