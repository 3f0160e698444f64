"""A run keeps its trained weights; they re-evaluate exactly and export to PEFT and to a merged checkpoint.

Runs go through the real runner on the tiny models and fixture tasks. PEFT (a test dependency only)
is the oracle for the adapter format: it must load the export without missing/unexpected keys,
give the suite's logits (max abs diff <= 1e-5, pruned triplets included) and, saving what it
loaded, write back exactly our tensors and rank pattern.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from experiments.evaluate import main as evaluate_main
from experiments.evaluate import reevaluate
from experiments.export import ExportError, export_merged, export_peft
from experiments.export import main as export_main
from experiments.results import read_result
from experiments.runner import _build, resolve, run
from experiments.weights import WEIGHT_FILES, build_base, load_run, read_weights
from tests.conftest import compose


def _run(tmp_path: Path, task: str, model: str, method: str, budget: str, extra: list[str] = ()) -> tuple[Path, dict]:
    cfg = compose([f"task={task}", f"model={model}", f"method={method}", f"budget={budget}",
                    f"output_root={tmp_path}", "trainer.progress=false", *extra])
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    return Path(cfg.run_dir), record


def _inputs(model: torch.nn.Module, head: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (3, 14), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if head == "seq2seq_lm":
        batch["decoder_input_ids"] = torch.randint(5, vocab, (3, 6), generator=gen)
    return batch


def _outputs(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") and out.logits is not None else torch.cat(
        [out.start_logits, out.end_logits], dim=-1)


def _load_peft(base, adapter_dir: Path):
    peft = pytest.importorskip("peft")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(base, str(adapter_dir))
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    return model.eval(), messages


def _key_warnings(messages: list[str]) -> list[str]:
    return [m for m in messages if "missing" in m.lower() or "unexpected" in m.lower()]


@pytest.mark.slow
def test_small_run_keeps_its_weights_and_reevaluates_exactly(tmp_path, capsys):
    run_dir, record = _run(tmp_path, "tiny_glue_rte", "tiny_deberta", "lora", "glue_0.3m", ["trainer.max_steps=4"])
    block = record["weights"]
    final = run_dir / WEIGHT_FILES["final"]
    assert block["final"]["file"] == WEIGHT_FILES["final"] and block["final"]["bytes"] == final.stat().st_size
    assert block["best"] == "final" and not (run_dir / WEIGHT_FILES["best"]).exists()
    tensors, meta = read_weights(final)
    # 12 adapted matrices x (A, B) + the head (pooler.dense, classifier: weight and bias each)
    assert len(tensors) == block["final"]["tensors"] == 12 * 2 + 4
    assert block["final"]["parameters"] == sum(t.numel() for t in tensors.values())
    assert meta["spec"]["method"]["r"] == 2 and meta["step"] == 4
    assert json.loads((run_dir / "result.json").read_text())["weights"] == block
    assert evaluate_main([str(run_dir)]) == 0
    assert "reproduced: yes, exactly" in capsys.readouterr().out


@pytest.mark.slow
def test_best_weights_reproduce_the_best_metric_and_survive_a_resume(tmp_path):
    """STS-B correlations move with every weight, so exact equality means bit-identical models.

    The run is cut after step 10 (last checkpoint at 9, best evaluation at 4) and resumed: the best
    weights must come from the checkpoint, equal to the uninterrupted run's. Prune-LoRA's frozen 0/1
    gates (lora_E, requires_grad=False; closed from step 3 on) must be checkpointed and saved too.
    """
    extra = ["trainer.max_steps=12", "trainer.eval_every=4", "trainer.checkpoint_every=3"]
    full_dir, full = _run(tmp_path / "full", "tiny_glue_stsb", "tiny_deberta", "prune_lora", "glue_0.3m", extra)
    evals = full["metrics"]["evals"]
    assert full["metrics"]["best"]["step"] == 4 < evals[-1]["step"], evals  # best != final: two files
    assert full["weights"]["best"]["step"] == 4

    cfg = compose(["task=tiny_glue_stsb", "model=tiny_deberta", "method=prune_lora", "budget=glue_0.3m",
                    f"output_root={tmp_path / 'cut'}", "trainer.progress=false", *extra])
    trainer, _, _ = _build(cfg, resolve(cfg), Path(cfg.run_dir), None)
    trainer.train(stop_after=10)  # dies at step 10: the step-9 checkpoint (with the best snapshot) survives
    del trainer
    resumed = run(cfg)
    assert resumed["metrics"]["evals"] == evals
    for which in ("final", "best"):
        a, meta = read_weights(full_dir / WEIGHT_FILES[which])
        b, _ = read_weights(Path(cfg.run_dir) / WEIGHT_FILES[which])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), which
        gates = [t for n, t in a.items() if n.endswith(".lora_E")]
        assert len(gates) == 12 and all(set(t.view(-1).tolist()) <= {0.0, 1.0} for t in gates)
        if which == "final":
            assert sum(meta["rank_pattern"].values()) == 12 * meta["spec"]["method"]["target_r"]
        out = reevaluate(full_dir, which)
        assert out["reproduced"], (out["metrics"], out["recorded"])


PEFT_CASES = [
    ("tiny_glue_rte", "tiny_deberta", "adalora", "glue_0.3m"),
    ("tiny_glue_rte", "tiny_deberta", "lora", "glue_0.3m"),
    ("tiny_glue_rte", "tiny_bert", "adalora", "glue_0.3m"),
    ("tiny_squad_v1", "tiny_bert", "lora", "qa_0.16"),
    ("tiny_xsum", "tiny_bart", "adalora", "nlg_0.26"),
    ("tiny_xsum", "tiny_bart", "lora", "nlg_0.26"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "model", "method", "budget"), PEFT_CASES, ids=lambda x: str(x))
def test_peft_and_merged_exports_give_the_suites_logits(tmp_path, task, model, method, budget):
    run_dir, record = _run(tmp_path, task, model, method, budget, ["trainer.max_steps=8"])
    ours = load_run(run_dir)
    batch = _inputs(ours.model, ours.spec.head)
    expected = _outputs(ours.model, batch)

    adapter = export_peft(run_dir, tmp_path / "peft")
    config = json.loads((adapter / "adapter_config.json").read_text())
    peft_model, messages = _load_peft(build_base(ours.spec), adapter)
    assert _key_warnings(messages) == [], messages
    assert (_outputs(peft_model, batch) - expected).abs().max().item() <= 1e-5
    if method == "adalora":
        kept = {k.removesuffix(".lora_E"): sum(v) for k, v in config["rank_pattern"].items()}
        assert kept == record["ranks"]["pattern"]  # the final rank pattern, as recorded
        assert min(kept.values()) < config["init_r"]  # pruned triplets are in the comparison
    # PEFT saving what it loaded writes back exactly our tensors and config.
    with warnings.catch_warnings():  # PEFT takes a rank-0 layer (allowed, peft#1539) for an ungathered ZeRO-3 shard
        warnings.filterwarnings("ignore", message=".*invalid shape.*")
        peft_model.save_pretrained(tmp_path / "resaved")
    ours_sd, theirs_sd = load_file(adapter / "adapter_model.safetensors"), load_file(tmp_path / "resaved/adapter_model.safetensors")
    assert ours_sd.keys() == theirs_sd.keys() and all(torch.equal(ours_sd[k], theirs_sd[k]) for k in ours_sd)
    resaved = json.loads((tmp_path / "resaved/adapter_config.json").read_text())
    assert (resaved.get("rank_pattern") or None) == config.get("rank_pattern")  # LoRA: PEFT writes {}
    # PEFT 0.21 warns that AdaLoRA's rank_pattern keys match no module (a check written for LoRA's
    # regex patterns); its own saved adapters get the very same warnings, so they are not ours.
    _, own = _load_peft(build_base(ours.spec), tmp_path / "resaved")
    assert sorted(messages) == sorted(own)

    merged_dir = export_merged(run_dir, tmp_path / "merged")
    merged = type(ours.model).from_pretrained(merged_dir).eval()
    assert (_outputs(merged, batch) - expected).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_prune_lora_variant_exports_with_a_note(tmp_path, capsys):
    run_dir, _ = _run(tmp_path, "tiny_glue_rte", "tiny_deberta", "prune_lora", "glue_0.3m", ["trainer.max_steps=8"])
    assert export_main([str(run_dir), "--format", "peft", "--out", str(tmp_path / "peft"), "--with-base"]) == 0
    assert "'prune_lora' is a adalora variant" in capsys.readouterr().out
    ours = load_run(run_dir)
    config = json.loads((tmp_path / "peft/adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == (tmp_path / "peft/base_model").resolve()
    base = type(ours.model).from_pretrained(config["base_model_name_or_path"])
    peft_model, messages = _load_peft(base, tmp_path / "peft")
    assert _key_warnings(messages) == []
    batch = _inputs(ours.model, ours.spec.head)
    assert (_outputs(peft_model, batch) - _outputs(ours.model, batch)).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_adapters_keep_the_suite_format_and_full_ft_saves_only_when_asked(tmp_path, capsys):
    run_dir, _ = _run(tmp_path / "a", "tiny_glue_rte", "tiny_deberta", "adapter_houlsby", "glue_0.3m",
                      ["trainer.max_steps=4"])
    for fmt in ("peft", "merged"):
        assert export_main([str(run_dir), "--format", fmt, "--out", str(tmp_path / fmt)]) == 2
        assert "suite's own format" in capsys.readouterr().err
    with pytest.raises(ExportError, match=r"'adapter_houlsby' \(adapter\) has no PEFT form"):
        export_peft(run_dir, tmp_path / "x")
    assert reevaluate(run_dir)["reproduced"]

    ft_dir, ft = _run(tmp_path / "b", "tiny_glue_rte", "tiny_deberta", "full_ft", "none", ["trainer.max_steps=2"])
    assert ft["weights"] is None and not (ft_dir / "weights").exists()
    assert evaluate_main([str(ft_dir)]) == 2 and "no saved weights" in capsys.readouterr().err
    ft_dir, ft = _run(tmp_path / "c", "tiny_glue_rte", "tiny_deberta", "full_ft", "none",
                      ["trainer.max_steps=2", "trainer.save_model=true"])
    ours = load_run(ft_dir)
    assert ft["weights"]["final"]["parameters"] == sum(p.numel() for p in ours.model.parameters())
    merged = type(ours.model).from_pretrained(export_merged(ft_dir, tmp_path / "merged_ft")).eval()
    batch = _inputs(ours.model, ours.spec.head)
    assert torch.equal(_outputs(merged, batch), _outputs(ours.model, batch))
    assert read_result(ft_dir)["weights"]["best"] == "final"
