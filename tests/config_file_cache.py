"""Each config file parsed once per test process, instead of once per Hydra compose.

Hydra reads and parses every file of the defaults list afresh on each compose (its own cache lives for one
compose), and that is about half of a compose here: ~20 files, each a YAML parse and an OmegaConf build. The
suite composes thousands of times in-process (the ``compose`` helper, sweeps run through Hydra's launcher,
the sweep preflight), so :func:`install` keeps each file's parse, keyed by its path and its exact bytes (a
file a test rewrites is parsed again, however quickly it was rewritten: file times are too coarse for that),
and gives every load its own deep copy, because Hydra merges loaded nodes into the composed config without
copying them and edits the result. A copy is about a seventh of a parse. Only the parse is shared: Hydra
still reads each file, builds the defaults list and composes as the CLI does, and
tests/test_config_file_cache.py checks that a compose equals an uncached one.
"""

from __future__ import annotations

import copy
import dataclasses
import os

from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult, ConfigSource

# Hydra's plugin scan executes its core-plugin modules again, which defines the file source's class anew: the
# class to patch is the one the scan registered for ``file://``, so the scan runs first (once per process).
Plugins.instance()
FILE_SOURCE: type[ConfigSource] = SourcesRegistry.instance().resolve("file")
_parse = FILE_SOURCE.load_config  # Hydra's own load: the one that runs on a miss
_parsed: dict[tuple[str, bytes], ConfigResult] = {}


def _load_config(source: ConfigSource, config_path: str) -> ConfigResult:
    """Hydra's ``FileConfigSource.load_config``, its parse kept per (path, bytes), a deep copy handed out."""
    full_path = os.path.realpath(os.path.join(source.path, source._normalize_file_name(config_path)))
    try:
        with open(full_path, "rb") as f:
            key = (full_path, f.read())
    except OSError:  # missing or unreadable: Hydra's own load raises its own error
        return _parse(source, config_path)
    if key not in _parsed:
        _parsed[key] = _parse(source, config_path)
    kept = _parsed[key]
    return dataclasses.replace(kept, config=copy.deepcopy(kept.config), header=dict(kept.header))


def install() -> None:
    FILE_SOURCE.load_config = _load_config


def uninstall() -> None:
    FILE_SOURCE.load_config = _parse
