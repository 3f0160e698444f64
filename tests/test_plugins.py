"""adalora.plugins: entry points are found when installed after the first lookup, and read once otherwise."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from adalora.plugins import entry_point_objects

GROUP = "adalora.test_plugins"


def _install(site: Path, name: str) -> None:
    """A fake installed distribution in ``site`` whose entry point in GROUP is ``<name>:VALUE``."""
    (site / f"{name}.py").write_text("VALUE = 42\n")
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\n{name} = {name}:VALUE\n")


def test_a_package_installed_after_the_first_lookup_is_found(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list(entry_point_objects(GROUP)) == []
    _install(tmp_path, "plugins_late_pkg")  # into a directory already on sys.path
    assert list(entry_point_objects(GROUP)) == [42]


def test_entry_points_are_read_once_while_sys_path_is_unchanged(tmp_path, monkeypatch):
    """A yaml-only method row is looked up by name on every job of a sweep: the installed distributions'
    metadata is read again only when something on sys.path changed."""
    _install(tmp_path, "plugins_once_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    reads = []
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: reads.append(kw) or real(**kw))
    assert [list(entry_point_objects(GROUP)) for _ in range(3)] == [[42]] * 3
    assert reads == [{"group": GROUP}]
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    assert list(entry_point_objects(GROUP)) == [42] and len(reads) == 2


@pytest.mark.parametrize("broken", ["plugins_broken_pkg"])
def test_a_broken_entry_point_names_itself(tmp_path, monkeypatch, broken):
    _install(tmp_path, broken)
    (tmp_path / f"{broken}.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=f"entry point '{broken}' = '{broken}:VALUE'.*RuntimeError: boom"):
        list(entry_point_objects(GROUP))
