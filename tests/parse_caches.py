"""The test session's two parse caches: each config file parsed once per test process, and each interpolation
string parsed once, instead of on every Hydra compose and every read of an interpolated value.

The suite composes and resolves thousands of times in-process (the ``compose`` helper, sweeps run through Hydra's
launcher, the sweep preflight, every in-process run), and parsing is most of that:

- Hydra reads and parses every file of the defaults list afresh on each compose (its own cache lives for one
  compose): ~20 files, each a YAML parse and an OmegaConf build, about half of a compose. The file cache keeps
  each file's parse, keyed by its path and its exact bytes (a file a test rewrites is parsed again, however
  quickly it was rewritten: file times are too coarse for that), and gives every load its own deep copy, because
  Hydra merges loaded nodes into the composed config without copying them and edits the result. A copy is about
  a seventh of a parse. Hydra still reads each file, builds the defaults list and composes as the CLI does.
- OmegaConf parses an interpolation string with its ANTLR grammar each time a value is read, and every config
  reads the same few dozen strings (``run_dir``, ``${selected_lr:${task.name},...}``). A parse tree is a function
  of (string, rule, lexer mode) alone; resolving only visits it (the values come from the config and the
  resolvers at each visit), and a string that fails to parse raises as before (nothing is kept).

tests/test_parse_caches.py checks that a compose equals an uncached one, and test_sweeps compares the sweep
expansion's jobs with real composes run without either cache (:func:`uncached`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
from collections.abc import Iterator

import omegaconf._utils
import omegaconf.base
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult, ConfigSource

# Hydra's plugin scan executes its core-plugin modules again, which defines the file source's class anew: the
# class to patch is the one the scan registered for ``file://``, so the scan runs first (once per process).
Plugins.instance()
FILE_SOURCE: type[ConfigSource] = SourcesRegistry.instance().resolve("file")
_load_file = FILE_SOURCE.load_config  # Hydra's own load: the one that runs on a miss
_parsed_files: dict[tuple[str, bytes], ConfigResult] = {}
_parse_interpolation = omegaconf.base.parse  # OmegaConf's own grammar parse
_parsed_once = functools.cache(_parse_interpolation)


def _load_config(source: ConfigSource, config_path: str) -> ConfigResult:
    """Hydra's ``FileConfigSource.load_config``, its parse kept per (path, bytes), a deep copy handed out."""
    full_path = os.path.realpath(os.path.join(source.path, source._normalize_file_name(config_path)))
    try:
        with open(full_path, "rb") as f:
            key = (full_path, f.read())
    except OSError:  # missing or unreadable: Hydra's own load raises its own error
        return _load_file(source, config_path)
    if key not in _parsed_files:
        _parsed_files[key] = _load_file(source, config_path)
    kept = _parsed_files[key]
    return dataclasses.replace(kept, config=copy.deepcopy(kept.config), header=dict(kept.header))


def install() -> None:
    FILE_SOURCE.load_config = _load_config
    omegaconf.base.parse = omegaconf._utils.parse = _parsed_once


def uninstall() -> None:
    FILE_SOURCE.load_config = _load_file
    omegaconf.base.parse = omegaconf._utils.parse = _parse_interpolation


@contextlib.contextmanager
def uncached() -> Iterator[None]:
    """Hydra's and OmegaConf's own parsing inside the block (the session installs the caches: tests/conftest.py)."""
    uninstall()
    try:
        yield
    finally:
        install()
