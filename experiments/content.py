"""What a run's data and model *are*: fingerprints of local data files and resolved hub commits.

A config names its data by path (``task.dataset.data_files``) or by hub id, and a path or a
branch name does not say what was read: a file edited in place, or a hub branch that moved,
gives other numbers under the same config. :func:`content_of` therefore describes the content:

- a local data file (``data_files``, or the files a ``builder`` writes): its size and SHA-256;
- a hub dataset (``dataset.revision``, default the ``main`` branch) and a hub model
  (``model.revision``): the commit the revision resolves to.

Hashing a big file takes a while and a run computes its identity more than once, so a file's
hash is cached by (absolute path, size, mtime, ctime), in memory and in
``<ADALORA_CACHE_DIR>/fingerprints.json``; a file changed in place changes its mtime and
ctime and is hashed again. A revision is resolved from the local Hugging Face cache (the
``refs/<revision>`` file every download writes), so runs with ``HF_HUB_OFFLINE=1`` need no
network; online, a revision not in the cache is asked of the hub. What cannot be known (a
missing file, an unresolvable revision, a builder that fails) is left out: the run then fails
on loading, or the comparison treats the entry as unknown (``experiments.identity``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CACHE_FILE = "fingerprints.json"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 20


class FingerprintCache:
    """SHA-256 of files, computed once per (path, size, mtime, ctime) and kept on disk."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._entries: dict[str, list] | None = None

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            self._entries = {}
            if self.path is not None and self.path.is_file():
                try:
                    loaded = json.loads(self.path.read_text())
                    self._entries = loaded if isinstance(loaded, dict) else {}
                except (OSError, ValueError):
                    self._entries = {}  # a damaged cache only costs a re-hash
        return self._entries

    def fingerprint(self, file: str | os.PathLike) -> dict[str, Any]:
        """``{"bytes": n, "sha256": hex}`` of ``file`` (raises OSError when it cannot be read)."""
        path = Path(file).resolve()
        stat = path.stat()
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        entries = self._load()
        cached = entries.get(str(path))
        if isinstance(cached, list) and len(cached) == 4 and cached[:3] == key:
            return {"bytes": stat.st_size, "sha256": cached[3]}
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
        entries[str(path)] = [*key, digest.hexdigest()]
        self._save()
        return {"bytes": stat.st_size, "sha256": digest.hexdigest()}

    def _save(self) -> None:
        """Atomic write; parallel jobs may overwrite each other's entries, which only costs a re-hash."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(self._entries, fh)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache directory: hashes are kept in memory only


_CACHE: FingerprintCache | None = None


def default_cache() -> FingerprintCache:
    """The process-wide cache in the suite's cache directory (``experiments.tasks.bbc.cache_root``)."""
    global _CACHE
    from experiments.tasks.bbc import cache_root

    path = cache_root() / CACHE_FILE
    if _CACHE is None or _CACHE.path != path:
        _CACHE = FingerprintCache(path)
    return _CACHE


# ---------------------------------------------------------------------------- hub revisions
def _offline() -> bool:
    import huggingface_hub.constants as hc

    return bool(hc.HF_HUB_OFFLINE)


_RESOLVED: dict[tuple[str, str, str], str | None] = {}


def resolve_revision(repo_id: str, repo_type: str, revision: str | None) -> str | None:
    """The commit ``revision`` (default ``main``) of a hub repo points at, or None if unknown.

    A 40-hex revision is a commit already. Otherwise the local HF cache answers
    (``<HF_HUB_CACHE>/<repo folder>/refs/<revision>``); online, the hub is asked when the cache
    has no answer yet (the run is about to download that revision).
    """
    import huggingface_hub.constants as hc
    from huggingface_hub.file_download import repo_folder_name

    revision = revision or "main"
    if _SHA.match(revision):
        return revision
    ref = Path(hc.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type) / "refs" / revision
    if ref.is_file():
        return ref.read_text().strip() or None
    if _offline():
        return None
    key = (repo_type, repo_id, revision)
    if key not in _RESOLVED:
        from huggingface_hub import HfApi

        try:
            _RESOLVED[key] = HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision).sha
        except Exception:  # noqa: BLE001 - unknown (no network, no such repo): loading will say why
            _RESOLVED[key] = None
    return _RESOLVED[key]


# ---------------------------------------------------------------------------- a config's content
def _files_content(data_files: Mapping[str, Any], cache: FingerprintCache) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, files in data_files.items():
        paths = [str(files)] if isinstance(files, str) else [str(f) for f in files]
        try:
            prints = [cache.fingerprint(p) for p in paths]
        except OSError:
            continue  # a missing file: the run fails on loading and names it
        out[str(split)] = prints[0] if isinstance(files, str) else prints
    return out


def data_content(dataset_cfg: Mapping[str, Any], cache: FingerprintCache | None = None) -> dict[str, Any]:
    """Fingerprints of a dataset's local files per split, or ``{"revision": sha}`` of a hub dataset."""
    from experiments.tasks.base import materialize_dataset

    cache = cache or default_cache()
    if dataset_cfg.get("builder"):
        try:
            dataset_cfg = materialize_dataset(dataset_cfg)
        except Exception:  # noqa: BLE001 - the run fails on loading with the builder's own message
            return {}
    if dataset_cfg.get("data_files"):
        return _files_content(dataset_cfg["data_files"], cache)
    path = dataset_cfg.get("path")
    if not path or Path(str(path)).exists():
        return {}  # a local dataset directory: not a hub repo
    sha = resolve_revision(str(path), "dataset", dataset_cfg.get("revision"))
    return {"revision": sha} if sha else {}


def model_content(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{"revision": sha}`` of a hub model; tiny and package models (and local directories) have none."""
    location = model_cfg.get("pretrained")
    if model_cfg.get("source") != "hub" or not location or Path(str(location)).exists():
        return {}
    sha = resolve_revision(str(location), "model", model_cfg.get("revision"))
    return {"revision": sha} if sha else {}


def content_of(config: Mapping[str, Any], cache: FingerprintCache | None = None) -> dict[str, Any]:
    """The ``content`` block of a resolved run config: its data's and its model's, known parts only."""
    out: dict[str, Any] = {}
    task = config.get("task") or {}
    data = data_content(task.get("dataset") or {}, cache)
    if data:
        out["data"] = data
    more = {name: c for name, dataset in _more_datasets(task).items() if (c := data_content(dataset, cache))}
    if more:  # the other data sets the task reads (a causal-LM task's eval sets)
        out["more_data"] = more
    model = model_content(config.get("model") or {})
    if model:
        out["model"] = model
    return out


def _more_datasets(task: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The task family's other data sets (``Task.more_datasets``); none where the family is unknown (the run
    then fails resolving its config, naming it)."""
    from experiments.tasks import family_of

    try:
        family = family_of(task)
    except Exception:  # noqa: BLE001 - reported by experiments.spec.check_task
        return {}
    return family.more_datasets(task)
