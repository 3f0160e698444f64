"""Issue 25 item 4: the ``peft`` kind (DoRA, PiSSA, rsLoRA, LoRA+, PEFT's own AdaLoRA) through the
suite's contract: budget rule, accounting, the penalty counted once, allocation, PEFT's save format
and reload, exact resume, and the shipped rows end to end through ``experiments.run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BartConfig, BartForConditionalGeneration

from adalora import apply_method, orthogonal_regularization
from adalora.methods import MethodConfigError, MethodHandle
from tests.conftest import compose
from tests.tiny import cls_batch, deberta_v3_base_on_meta, seq2seq_batch, tiny_bart, tiny_deberta

peft = pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("peft_dora", "peft_pissa", "peft_rslora", "peft_loraplus", "peft_adalora")
LORA_ROWS = ROWS[:-1]
# A schedule for a 16-step run on the tiny models (the task's hparams give it in real runs).
TINY_SCHEDULE = {"alpha": 16.0, "tinit": 2, "tfinal": 4, "deltaT": 1, "orth_reg_weight": 0.1}


def shipped(row: str, **extra) -> dict:
    """The shipped method config of ``row`` (conf/method/<row>.yaml), null keys left to the budget level."""
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "method" / f"{row}.yaml"))
    cfg = {k: v for k, v in cfg.items() if v is not None}
    if cfg.get("peft_type") == "adalora":
        cfg = {**TINY_SCHEDULE, **cfg}
    return {**cfg, **extra}


def bart_large_on_meta() -> BartForConditionalGeneration:
    """BART-large's shape (12 + 12 layers, d 1024, FFN 4096) with no storage."""
    cfg = BartConfig(vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                     decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096)
    with torch.device("meta"):
        return BartForConditionalGeneration(cfg)


# ------------------------------------------------------------------ budget rule and accounting
DEBERTA_UNIT, DEBERTA_DOUT = 165_888, 82_944  # Σ (d_in + d_out) and Σ d_out over DeBERTaV3-base's 72 matrices
BART_UNIT, BART_DOUT = 540_672, 270_336  # the same over BART-large's 192


@pytest.mark.parametrize(("row", "level", "r", "count"), [
    # DoRA's magnitude vectors are exactly half a unit of rank: r0 and r0 - 1 tie, the smaller wins
    ("peft_dora", "glue_0.3m", 1, 1 * DEBERTA_UNIT + DEBERTA_DOUT),
    ("peft_dora", "glue_1.2m", 7, 7 * DEBERTA_UNIT + DEBERTA_DOUT),
    ("peft_dora", "qa_0.08", 1, 1 * DEBERTA_UNIT + DEBERTA_DOUT),  # r = 0 does not exist
    ("peft_rslora", "glue_0.6m", 4, 4 * DEBERTA_UNIT),
    ("peft_loraplus", "glue_0.3m", 2, 2 * DEBERTA_UNIT),
])
def test_lora_rows_meet_the_budget_rule_on_deberta_v3_base(row, level, r, count):
    handle = apply_method(deberta_v3_base_on_meta(), shipped(row), budget=level)
    counts = handle.parameter_counts()
    assert handle.settings.r == r
    assert counts["trainable_paper"] == count == counts["trainable_paper_start"]
    assert counts["adapted_matrices"] == 72  # the six weight types; never PEFT's `dense` pooler default
    target = {"glue_0.3m": 2, "glue_0.6m": 4, "glue_1.2m": 8, "qa_0.08": 1}[level] * DEBERTA_UNIT
    assert counts["budget_target"] == target
    assert counts["budget_gap"] == pytest.approx((count - target) / target)


def test_pissa_budget_counts_without_running_its_svd():
    """PiSSA's count is LoRA's (measured on meta tensors, where its SVD cannot run)."""
    from adalora.budget import get_budget
    from adalora.methods.peft_kind import PeftMethod

    model = deberta_v3_base_on_meta()
    assert PeftMethod.budget_knobs(get_budget("glue_0.3m"), shipped("peft_pissa"), model) == {"r": 2}
    assert PeftMethod.count_for(model, {**shipped("peft_pissa"), "r": 2}, "peft_pissa") == 2 * DEBERTA_UNIT


@pytest.mark.slow  # eight meta copies of BART-large (the count rule tries r = 1 .. 8)
def test_dora_on_bart_large_counts_its_magnitude_vectors():
    handle = apply_method(bart_large_on_meta(), shipped("peft_dora"), budget="nlg_1.10")
    assert handle.settings.r == 7 and len(handle.adapted) == 192
    assert handle.parameter_counts()["trainable_paper"] == 7 * BART_UNIT + BART_DOUT


def test_peft_adalora_takes_the_levels_ranks_and_counts_start_and_end():
    handle = apply_method(tiny_deberta(), shipped("peft_adalora"), budget="glue_0.3m")
    assert (handle.settings.init_r, handle.settings.target_r) == (4, 2)  # method=adalora's ranks at this level
    per_rank = sum(m.in_features + m.out_features + 1 for m in handle.adapted.values())
    assert handle.trainable_paper_start == 4 * per_rank
    handle.set_total_steps(16)
    _train(handle, 16)
    ranks = handle.rank_pattern()
    assert sum(ranks.values()) == 2 * len(ranks) and set(ranks.values()) != {4}
    kept = sum(ranks[n] * (m.in_features + m.out_features + 1) for n, m in handle.adapted.items())
    counts = handle.parameter_counts()
    assert counts["trainable_paper"] == kept
    assert counts["trainable_paper_start"] == 4 * per_rank


def test_head_trains_but_is_not_counted_and_ranknum_stays_frozen():
    handle = apply_method(tiny_deberta(), shipped("peft_adalora"), budget="glue_0.3m")
    trained = {n for n, p in handle.model.named_parameters() if p.requires_grad}
    assert {n for n in trained if ".modules_to_save." in n} == {
        f"base_model.model.{h}.modules_to_save.default.{p}"
        for h, p in (("pooler", "dense.weight"), ("pooler", "dense.bias"), ("classifier", "weight"),
                     ("classifier", "bias"))}
    assert not any("ranknum" in n or "original_module" in n or "base_layer" in n for n in trained)
    counts = handle.parameter_counts()
    assert counts["head"] == 32 * 32 + 32 + 32 * 2 + 2
    assert counts["trainable_total"] == counts["trainable_paper"] + counts["head"]


# ------------------------------------------------------------------ the loop's hooks
def _train(handle: MethodHandle, steps: int, batch_fn=cls_batch, lr: float = 5e-3) -> None:
    groups = handle.optimizer_param_groups(0.01, lr=lr)
    opt = torch.optim.AdamW(groups, lr=lr)
    handle.model.train()
    for step in range(steps):
        loss = handle.model(**batch_fn(step)).loss + handle.regularization_loss()
        loss.backward()
        opt.step()
        handle.step(step)
        opt.zero_grad()


def test_orthogonal_penalty_is_added_once_by_peft_forward():
    handle = apply_method(tiny_deberta(), shipped("peft_adalora", orth_reg_weight=0.3), budget="glue_0.3m")
    with torch.no_grad():
        for module in handle.adapted.values():
            for kind in ("lora_A", "lora_E", "lora_B"):
                getattr(module, kind)["default"].normal_(std=0.3)
    reg = handle.regularization_loss()
    assert reg.dim() == 0 and reg.item() == 0.0  # the loop adds nothing: PEFT's forward already did
    batch = cls_batch(0)
    mods = list(handle.adapted.values())
    penalty = 0.3 * orthogonal_regularization([m.lora_A["default"] for m in mods], [m.lora_B["default"] for m in mods])
    assert penalty.item() > 0.1
    total = handle.model(**batch).loss
    task_only = handle.backbone(**batch).loss  # the transformers model alone: no penalty
    torch.testing.assert_close(total, task_only + penalty, rtol=1e-6, atol=1e-6)


def test_loraplus_groups_give_b_sixteen_times_the_lr_of_a():
    handle = apply_method(tiny_deberta(), shipped("peft_loraplus"), budget="glue_0.3m")
    lr_of = {id(p): g["lr"] for g in handle.optimizer_param_groups(0.01, lr=1e-3) for p in g["params"]}
    named = dict(handle.model.named_parameters())
    b = [lr_of[id(p)] for n, p in named.items() if ".lora_B." in n]
    a = [lr_of[id(p)] for n, p in named.items() if ".lora_A." in n]
    assert len(a) == len(b) == 12 and set(a) == {1e-3} and all(x == pytest.approx(16e-3) for x in b)
    trainable = {id(p) for p in named.values() if p.requires_grad}
    assert set(lr_of) == trainable  # every trained tensor in exactly one group


def test_plain_rows_use_one_lr_and_the_suites_decay_groups():
    handle = apply_method(tiny_deberta(), shipped("peft_dora"), budget="glue_0.3m")
    groups = handle.optimizer_param_groups(0.01, lr=1e-3)
    assert all("lr" not in g for g in groups) and [g["weight_decay"] for g in groups] == [0.01, 0.0]


@pytest.mark.parametrize(("cfg", "match"), [
    ({"peft_type": "adalora", "init_r": 4, "target_r": 2, "use_dora": True}, "method.use_dora"),
    ({"peft_type": "adalora", "init_r": 2, "target_r": 4}, "target_r"),
    ({"peft_type": "lora", "r": 2, "options": {"r": 4}}, r"method.options sets \['r'\]"),
    ({"peft_type": "lora", "r": 2, "loraplus_lr_ratio": 0.5}, "loraplus_lr_ratio"),
    ({"peft_type": "lorra", "r": 2}, "peft_type"),
])
def test_bad_peft_configs_name_the_key(cfg, match):
    with pytest.raises(MethodConfigError, match=match):
        apply_method(tiny_deberta(), {"name": "mine", "kind": "peft", **cfg})


def test_schedule_without_a_decrease_phase_is_refused_at_total_steps():
    handle = apply_method(tiny_deberta(), shipped("peft_adalora", tinit=8, tfinal=8), budget="glue_0.3m")
    with pytest.raises(MethodConfigError, match="tinit"):
        handle.set_total_steps(16)


# ------------------------------------------------------------------ PEFT's format, reload
@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("family", ["deberta", "bart"])
def test_saved_adapter_is_peft_native_and_reloads_to_the_same_logits(tmp_path, row, family):
    build, batch_fn = (tiny_deberta, cls_batch) if family == "deberta" else (tiny_bart, seq2seq_batch)
    level = "glue_0.3m" if family == "deberta" else "nlg_0.26"
    handle = apply_method(build(seed=3), shipped(row), budget=level)
    handle.set_total_steps(16)
    _train(handle, 16, batch_fn)
    handle.model.eval()
    batch = batch_fn(99)
    with torch.no_grad():
        expected = handle.model(**batch).logits
    handle.save(tmp_path)
    adapter_dir = tmp_path / "method"  # PEFT's files beside method.safetensors (the suite's metadata)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == ("ADALORA" if row == "peft_adalora" else "LORA")
    assert config.get("use_dora", False) == (row == "peft_dora")
    assert config.get("use_rslora", False) == (row == "peft_rslora")
    assert config["init_lora_weights"] == ("pissa" if row == "peft_pissa" else True)
    if row == "peft_adalora":
        assert config["total_step"] == 16
        assert {k.removesuffix(".lora_E"): sum(v) for k, v in config["rank_pattern"].items()} == handle.rank_pattern()
    # PEFT's own loader on a fresh base (PiSSA: it redoes the SVD of the same base)
    native = peft.PeftModel.from_pretrained(build(seed=3), str(adapter_dir)).eval()
    layers = {n.removeprefix("base_model.model.") for n, m in native.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert layers == set(handle.adapted)  # the six weight types (PEFT may store them as shorter suffixes)
    # and the suite's: MethodHandle.load rebuilds the handle (settings, ranks, accounting) around it
    reloaded = MethodHandle.load(build(seed=3), tmp_path)
    with torch.no_grad():
        # without labels: PEFT's inference-mode AdaLoraModel cannot add its penalty to a loss (no trainable adapter)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if family == "bart":
            inputs["decoder_input_ids"] = handle.backbone.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
            with torch.no_grad():
                expected = handle.model(**inputs).logits
        # PEFT's loader cuts AdaLoRA's layers to the kept triplets: the same sums, another rounding
        torch.testing.assert_close(native(**inputs).logits, expected, rtol=0, atol=0 if row != "peft_adalora" else 1e-6)
        torch.testing.assert_close(reloaded.model(**batch).logits, expected, rtol=0, atol=0)
    assert reloaded.kind == "peft" and reloaded.name == row
    assert reloaded.rank_pattern() == handle.rank_pattern()
    assert reloaded.parameter_counts()["trainable_paper"] == handle.parameter_counts()["trainable_paper"]


def test_reload_onto_another_base_is_refused(tmp_path):
    handle = apply_method(tiny_deberta(seed=3), shipped("peft_dora"), budget="glue_0.3m")
    handle.save(tmp_path)
    with pytest.raises(ValueError, match="base model differs"):
        MethodHandle.load(tiny_deberta(seed=4), tmp_path)


def test_merged_export_computes_the_adapted_model(tmp_path):
    from transformers import AutoModelForSequenceClassification

    handle = apply_method(tiny_deberta(seed=3), shipped("peft_pissa"), budget="glue_0.3m")
    _train(handle, 4)
    handle.model.eval()
    batch = cls_batch(7)
    with torch.no_grad():
        expected = handle.model(**batch).logits
    handle.export(tmp_path, format="merged")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ resume of PEFT's allocator
def test_allocator_state_round_trip_continues_exactly():
    """20 steps straight vs 9 steps, a checkpoint of weights + optimiser + allocator into a fresh handle,
    11 more: the same λ, masks and EMAs (PEFT's RankAllocator dicts, as tensors)."""
    def fresh():
        torch.manual_seed(0)
        h = apply_method(tiny_deberta(seed=5), shipped("peft_adalora", tinit=3, tfinal=6, deltaT=2), budget="glue_0.3m")
        h.set_total_steps(20)
        return h, torch.optim.AdamW(h.optimizer_param_groups(0.01, lr=5e-3), lr=5e-3)

    def steps(h, opt, start, stop):
        h.model.train()
        for step in range(start, stop):
            (h.model(**cls_batch(step)).loss + h.regularization_loss()).backward()
            opt.step()
            h.step(step)
            opt.zero_grad()

    full, opt_full = fresh()
    steps(full, opt_full, 0, 20)
    cut, opt_cut = fresh()
    steps(cut, opt_cut, 0, 9)
    saved = {"model": cut.trained_state(), "opt": opt_cut.state_dict(), "method": cut.state_dict()}
    assert {"ipt", "exp_avg_ipt", "exp_avg_unc", "rank_pattern"} <= set(saved["method"])
    assert all(isinstance(t, torch.Tensor) for t in saved["method"]["exp_avg_unc"].values())
    resumed, opt_resumed = fresh()
    resumed.model.load_state_dict(saved["model"], strict=False)
    opt_resumed.load_state_dict(saved["opt"])
    resumed.load_state_dict(saved["method"])
    steps(resumed, opt_resumed, 9, 20)
    assert resumed.rank_pattern() == full.rank_pattern() and set(full.rank_pattern().values()) != {4}
    for name, tensor in full.trained_state().items():
        assert torch.equal(tensor, resumed.trained_state()[name]), name


# ------------------------------------------------------------------ through experiments.run
FAMILIES = {  # task, model, budget level, Σ (d_in + d_out), Σ d_out over the adapted matrices of the tiny model
    "deberta": ("tiny_glue_rte", "tiny_deberta", "glue_0.3m", 896, 448),
    "bart": ("tiny_xsum", "tiny_bart", "nlg_0.26", 2304, 1152),
}


def _run_cfg(tmp_path: Path, family: str, row: str, extra: list[str] = ()):
    task, model, level, _, _ = FAMILIES[family]
    return compose([f"task={task}", f"model={model}", f"method={row}", f"budget={level}", f"output_root={tmp_path}",
                     "trainer.progress=false", "trainer.max_steps=12", *extra])


def _expected_count(family: str, row: str, record: dict) -> int:
    """The paper-way count the budget rule gives on the tiny model (LoRA r = 2 at both levels)."""
    _, _, _, unit, d_out = FAMILIES[family]
    if row == "peft_dora":
        return 1 * unit + d_out  # r = 1: DoRA's magnitude vectors are half a unit of rank (a tie, ties to the smaller)
    if row != "peft_adalora":
        return 2 * unit
    pattern, weights = record["ranks"]["pattern"], record["ranks"]["weight_types"]
    assert set(pattern) == set(weights)
    return sum(k * (w + 1) for k, w in zip(pattern.values(), _widths(family, pattern)))


def _widths(family: str, pattern: dict) -> list[int]:
    build = tiny_deberta if family == "deberta" else tiny_bart
    model = build()
    return [model.get_submodule(n).in_features + model.get_submodule(n).out_features for n in pattern]


def _run_and_check(tmp_path: Path, family: str, row: str) -> None:
    from experiments.evaluate import reevaluate
    from experiments.runner import run

    cfg = _run_cfg(tmp_path, family, row)
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    assert record["run"]["label"].endswith("(PEFT)") and record["train"]["steps"] == 12
    params = record["params"]
    assert params["trainable_paper"] == _expected_count(family, row, record)
    _, _, _, unit, _ = FAMILIES[family]
    assert params["budget_target"] == 2 * unit
    if row == "peft_adalora":  # the count at init_r at the start, the kept triplets at the end
        n = len(record["ranks"]["pattern"])
        assert params["trainable_paper_start"] == 4 * (unit + n)
        assert sum(record["ranks"]["pattern"].values()) == 2 * n
        assert set(record["ranks"]["pattern"].values()) != {4}
        assert record["ranks"]["history"][0]["budget"] == 4 * n > record["ranks"]["history"][-1]["budget"]
    else:
        assert params["trainable_paper_start"] == params["trainable_paper"] and record["ranks"] is None
    run_dir = Path(cfg.run_dir)
    adapter = json.loads((run_dir / "weights" / "final" / "adapter_config.json").read_text())  # PEFT's own files
    assert adapter["peft_type"] == ("ADALORA" if row == "peft_adalora" else "LORA")
    from adalora.methods.storage import read_safetensors

    tensors, meta = read_safetensors(run_dir / "weights" / "final.safetensors")  # the suite's metadata only
    assert tensors == {} and meta["peft_adapter"] == "final" and meta["rank_pattern"] == (record["ranks"] or {}).get("pattern")
    out = reevaluate(run_dir)  # experiments.evaluate: rebuilt from the saved files, the recorded metrics exactly
    assert out["reproduced"], (out["metrics"], out["recorded"])


def test_peft_adalora_runs_end_to_end_and_reloads(tmp_path):
    _run_and_check(tmp_path, "deberta", "peft_adalora")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["deberta", "bart"])
@pytest.mark.parametrize("row", ROWS)
def test_every_shipped_row_runs_end_to_end_and_reloads(tmp_path, family, row):
    if (family, row) == ("deberta", "peft_adalora"):
        pytest.skip("the fast test above")
    _run_and_check(tmp_path, family, row)


@pytest.mark.slow
def test_peft_rows_read_the_hparams_of_the_method_they_stand_beside():
    from experiments.runner import resolve

    rte = {row: resolve(compose(["task=glue_rte", f"method={row}", "budget=glue_0.3m"])) for row in ROWS}
    lora = resolve(compose(["task=glue_rte", "method=lora", "budget=glue_0.3m"]))
    adalora = resolve(compose(["task=glue_rte", "method=adalora", "budget=glue_0.3m"]))
    for row in LORA_ROWS:  # LoRA's alpha and lr fallback (glue_rte: 32, 1.2e-3)
        assert rte[row].method["alpha"] == lora.method["alpha"] == 32 and rte[row].train.lr == lora.train.lr
    ada = rte["peft_adalora"]
    assert {k: ada.method[k] for k in ("tinit", "tfinal", "deltaT", "orth_reg_weight", "alpha", "init_r", "target_r")} \
        == {k: adalora.method[k] for k in ("tinit", "tfinal", "deltaT", "orth_reg_weight", "alpha", "init_r", "target_r")}
    assert ada.train.lr == adalora.train.lr == 1.2e-3
    squad = resolve(compose(["task=squad_v1", "method=peft_rslora", "budget=qa_0.16"]))
    assert squad.train.epochs == 8 and squad.train.lr == 8e-5  # LoRA's SQuAD recipe (official LoRA commands)


def test_peft_rows_take_their_own_lr_search_result(tmp_path, monkeypatch):
    from experiments.lr_search import SELECTED_LR_ENV
    from experiments.runner import resolve

    selection = tmp_path / "selected.yaml"
    selection.write_text("selected: {glue_rte: {peft_dora: {glue_0.3m: {lr: 3.0e-4}}}}\n")
    monkeypatch.setenv(SELECTED_LR_ENV, str(selection))
    assert resolve(compose(["task=glue_rte", "method=peft_dora", "budget=glue_0.3m"])).train.lr == 3e-4
    assert resolve(compose(["task=glue_rte", "method=peft_pissa", "budget=glue_0.3m"])).train.lr == 1.2e-3


@pytest.mark.slow
def test_resumed_peft_adalora_run_matches_the_uninterrupted_one(tmp_path):
    """Stop after 7 of 20 steps (checkpoint every 7), resume: the same λ, masks, allocator EMAs and metrics."""
    from experiments.runner import _build, resolve, run

    extra = ["trainer.max_steps=20", "trainer.checkpoint_every=7", "trainer.eval_every=10", "trainer.keep_checkpoint=true"]
    full_cfg = _run_cfg(tmp_path / "full", "deberta", "peft_adalora", extra)
    full = run(full_cfg)
    cut_cfg = _run_cfg(tmp_path / "cut", "deberta", "peft_adalora", extra)
    trainer, _, _ = _build(cut_cfg, resolve(cut_cfg), Path(cut_cfg.run_dir), None)
    trainer.train(stop_after=7)  # the process "dies" here: only the step-7 checkpoint survives
    del trainer
    resumed = run(cut_cfg)
    assert resumed["status"] == full["status"] == "success"
    assert resumed["metrics"]["evals"] == full["metrics"]["evals"]
    assert resumed["ranks"]["pattern"] == full["ranks"]["pattern"] and set(full["ranks"]["pattern"].values()) != {4}
    a = torch.load(Path(full_cfg.run_dir) / "checkpoint.pt", weights_only=False)
    b = torch.load(Path(cut_cfg.run_dir) / "checkpoint.pt", weights_only=False)
    assert a["state"]["global_step"] == b["state"]["global_step"] == 14
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):  # PEFT's RankAllocator, as tensors
        assert a["method"][key].keys() == b["method"][key].keys() and a["method"][key]
        for name, tensor in a["method"][key].items():
            assert torch.equal(tensor, b["method"][key][name]), (key, name)


def test_export_prints_no_variant_note_for_peft_rows(tmp_path):
    from experiments.export import variant_note
    from experiments.results import write_result

    for name, method in (("dora", shipped("peft_dora")), ("qk", {"name": "lora_qk"})):
        write_result(tmp_path / name, {"status": "success", "run": {"method": method["name"]}, "config": {"method": method}})
    assert variant_note(tmp_path / "dora") is None  # the adapter is PEFT's own config, not a variant of it
    assert "lora_qk" in variant_note(tmp_path / "qk")  # a registered variant still gets its note


def test_peft_is_an_experiments_dependency_not_a_core_one():
    import ast

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "peft>=0.13" in project["optional-dependencies"]["experiments"]
    assert not any(d.startswith("peft") for d in project["dependencies"] + project["optional-dependencies"]["dev"])
    tree = ast.parse((ROOT / "adalora" / "methods" / "peft_kind.py").read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert "peft" not in top  # imported when a peft method is applied: `import adalora` needs torch only
