"""AdaLoRACallback in a real ``transformers.Trainer``, against a hand-written loop, bit for bit.

Both targets the callback serves: this library's AdaLoRA (``apply_method`` handle, trained with
``AdaLoRATrainer`` for γ·R) and PEFT's ``AdaLoraModel`` (a plain ``Trainer``). The hand-written
loop is the documented order: backward(loss + γ·R) → clip → optimizer.step → scheduler.step →
allocator step(global_step) → zero_grad, on the same batches (the Trainer's ``sequential``
sampler) with the same optimiser (``adamw_torch``, linear schedule). Tiny DeBERTa, 16 steps.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments, default_data_collator, get_linear_schedule_with_warmup

from adalora import apply_method
from adalora.allocator import AllocationNotRun
from adalora.integrations.hf import PATTERN_FILE, STATE_FILE, AdaLoRACallback, AdaLoRATrainer
from tests import contract_kinds  # noqa: F401 - kinds defined outside the suite
from tests.test_reliability_checkpoint import _Planted
from tests.tiny import VOCAB, tiny_deberta

peft = pytest.importorskip("peft")

STEPS, BATCH, N, LR = 16, 4, 16, 5e-3
TINIT, TFINAL, DELTA_T, INIT_R, TARGET_R = 2, 4, 2, 4, 2
OURS = {"name": "adalora", "init_r": INIT_R, "target_r": TARGET_R, "tinit": TINIT, "tfinal": TFINAL,
        "deltaT": DELTA_T, "orth_reg_weight": 0.1}


class Examples(torch.utils.data.Dataset):
    """N fixed random sequences with binary labels."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(i)
        ids = torch.randint(5, VOCAB, (12,), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor(i % 2)}


class MeanLossTrainer(AdaLoRATrainer):
    """DeBERTa's classification loss is a per-batch mean: the Trainer must divide it by the
    accumulation steps (transformers' documented ``loss_is_scaled_for_ga`` switch)."""

    loss_is_scaled_for_ga = False


class PlainMeanLossTrainer(Trainer):
    loss_is_scaled_for_ga = False


def build(kind: str, total_step: int = STEPS):
    """(model, the callback's target, Trainer class, λ of every adapted matrix by name)."""
    model = tiny_deberta(seed=0)
    torch.manual_seed(1)
    if kind == "ours":
        handle = apply_method(model, OURS)
        lambdas = {n: m.lora_E for n, m in handle.svd_modules.items()}
        return model, handle, MeanLossTrainer, lambdas
    config = peft.AdaLoraConfig(task_type="SEQ_CLS", init_r=INIT_R, target_r=TARGET_R, lora_alpha=16, lora_dropout=0.0,
                                tinit=TINIT, tfinal=TFINAL, deltaT=DELTA_T, orth_reg_weight=0.1, total_step=total_step,
                                target_modules=["query_proj", "key_proj", "value_proj"])
    model = peft.get_peft_model(model, config)
    lambdas = {n: p for n, p in model.named_parameters() if ".lora_E." in n}
    return model, model, PlainMeanLossTrainer, lambdas


def train_args(out, grad_accum: int = 1, max_steps: int = STEPS, **kw) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=BATCH, gradient_accumulation_steps=grad_accum,
        learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, optim="adamw_torch",
        max_grad_norm=1.0, train_sampling_strategy="sequential", save_strategy="steps", save_steps=10,
        logging_steps=5, report_to=[], use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0, **kw)


def run_trainer(kind: str, out, grad_accum: int = 1, resume: bool = False, total_step: int = STEPS):
    model, target, trainer_cls, lambdas = build(kind, total_step)
    callback = AdaLoRACallback(target)
    trainer = trainer_cls(model=model, args=train_args(out, grad_accum), train_dataset=Examples(), callbacks=[callback])
    trainer.train(resume_from_checkpoint=True if resume else None)
    return model, callback, lambdas, trainer


def hand_loop(kind: str, grad_accum: int = 1):
    """The documented loop, written out: what the callback must reproduce inside the Trainer."""
    model, target, _, lambdas = build(kind)
    data = Examples()
    batches = [default_data_collator([data[i] for i in range(s, s + BATCH)]) for s in range(0, N, BATCH)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, STEPS)
    if kind == "ours":
        target.set_total_steps(STEPS)
    model.train()
    for step in range(STEPS):
        for micro in range(grad_accum):
            batch = batches[(step * grad_accum + micro) % len(batches)]
            loss = model(**batch).loss
            if kind == "ours":
                loss = loss + target.regularization_loss()  # PEFT's forward adds γ·R itself
            (loss / grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if kind == "ours":
            target.step(step)
        else:
            model.base_model.update_and_allocate(step)
        optimizer.zero_grad(set_to_none=True)
    return model, lambdas


def assert_same_training(model, lambdas, ref_model, ref_lambdas) -> None:
    """Masks, λ and every trained tensor equal, bit for bit."""
    assert lambdas.keys() == ref_lambdas.keys()
    for name in lambdas:
        assert torch.equal(lambdas[name] == 0, ref_lambdas[name] == 0), f"mask of {name}"
    ref = dict(ref_model.named_parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, ref[name]), name


def kept_ranks(lambdas) -> dict[str, int]:
    """Non-zero λ per adapted module, by module name (PEFT's parameter names shortened to it)."""
    return {n.removeprefix("base_model.model.").split(".lora_E")[0]: int((e != 0).sum()) for n, e in lambdas.items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trainer runs by (kind, accumulation steps), each made once for the tests that read it."""
    runs = {}

    def get(kind: str, grad_accum: int):
        if (kind, grad_accum) not in runs:
            runs[kind, grad_accum] = run_trainer(kind, tmp_path_factory.mktemp(f"{kind}{grad_accum}"), grad_accum)
        return runs[kind, grad_accum]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "grad_accum"), [("ours", 1), ("ours", 2), ("peft", 2)])
def test_trainer_with_callback_equals_the_hand_written_loop(kind, grad_accum, trained):
    model, callback, lambdas, trainer = trained(kind, grad_accum)
    ref_model, ref_lambdas = hand_loop(kind, grad_accum)
    assert_same_training(model, lambdas, ref_model, ref_lambdas)
    ranks = kept_ranks(lambdas)
    assert sum(ranks.values()) == TARGET_R * len(ranks)  # b(T) reached at step T
    assert set(ranks.values()) != {INIT_R}  # the allocator pruned
    assert callback.driver.rank_pattern() == ranks
    logged = [r for r in trainer.state.log_history if "adalora/budget" in r]
    assert logged and logged[-1]["adalora/budget"] == TARGET_R * len(ranks)
    assert logged[-1]["adalora/rank_sum"] == TARGET_R * len(ranks)
    assert callback.rank_history[0] == {"step": 0, "budget": INIT_R * len(ranks), "ranks": dict.fromkeys(ranks, INIT_R)}
    assert callback.rank_history[-1]["ranks"] == ranks
    saved = json.loads((Path(trainer.args.output_dir) / "checkpoint-10" / PATTERN_FILE).read_text())
    before = [h for h in callback.rank_history if h["step"] < 10][-1]  # on_save runs after step 9's update
    assert saved["step"] == 10 and saved["ranks"] == before["ranks"]
    proof = callback.allocation  # the proof that allocation ran, as the suite's records hold it
    assert proof["allocator_runs"] == STEPS and proof["final_pattern"] == ranks and proof["ranks_must_change"]
    assert proof["rank_changes"] == [h["step"] for h in callback.rank_history[1:]]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "grad_accum"), [("ours", 1), ("peft", 2)])
def test_resume_from_a_trainer_checkpoint_continues_exactly(kind, grad_accum, trained, tmp_path):
    full_model, full_callback, full_lambdas, full_trainer = trained(kind, grad_accum)
    shutil.copytree(Path(full_trainer.args.output_dir) / "checkpoint-10", tmp_path / "checkpoint-10")
    model, callback, lambdas, trainer = run_trainer(kind, tmp_path, grad_accum, resume=True)
    assert trainer.state.global_step == STEPS
    assert callback.rank_history == full_callback.rank_history  # steps 0-9 came from the checkpoint
    assert callback.allocation == full_callback.allocation  # the allocator's run count too
    assert_same_training(model, lambdas, full_model, full_lambdas)


@pytest.mark.slow
def test_resume_without_the_callbacks_state_is_refused(trained, tmp_path):
    shutil.copytree(Path(trained("ours", 1)[3].args.output_dir) / "checkpoint-10", tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-10" / STATE_FILE).unlink()
    with pytest.raises(RuntimeError, match=f"holds {STATE_FILE}"):
        run_trainer("ours", tmp_path, resume=True)


@pytest.mark.slow
def test_a_planted_pickle_in_the_callbacks_state_file_is_refused_and_runs_nothing(trained, tmp_path):
    shutil.copytree(Path(trained("ours", 1)[3].args.output_dir) / "checkpoint-10", tmp_path / "checkpoint-10")
    marker = tmp_path / "code-ran"
    torch.save({"global_step": 10, "method": _Planted(marker)}, tmp_path / "checkpoint-10" / STATE_FILE)
    with pytest.raises(RuntimeError, match=f"{STATE_FILE} holds more than tensors and plain types .*nothing in it ran"):
        run_trainer("ours", tmp_path, resume=True)
    assert not marker.exists()


@pytest.mark.slow
def test_a_schedule_longer_than_the_trainers_steps_names_the_trainer_setting(tmp_path):
    model = tiny_deberta(seed=0)
    handle = apply_method(model, {**OURS, "tinit": 10, "tfinal": 8})
    trainer = MeanLossTrainer(model=model, args=train_args(tmp_path), train_dataset=Examples(),
                              callbacks=[AdaLoRACallback(handle)])
    with pytest.raises(ValueError, match=r"the Trainer runs 16 optimiser steps \(TrainingArguments\.max_steps, or "
                                         r"num_train_epochs .*must exceed tinit \+ tfinal = 10 \+ 8") as caught:
        trainer.train()
    assert "method.tinit" not in str(caught.value)


@pytest.mark.slow
def test_loraplus_through_adalora_trainer_trains_with_the_two_learning_rates_of_its_groups(tmp_path):
    model = tiny_deberta(seed=0)
    handle = apply_method(model, {"name": "peft_loraplus", "kind": "peft", "r": 2, "loraplus_lr_ratio": 16.0})
    trainer = AdaLoRATrainer(model=handle.model, args=train_args(tmp_path, max_steps=4), train_dataset=Examples(),
                             callbacks=[AdaLoRACallback(handle)])
    trainer.train()
    by_lr: dict[float, set[int]] = {}
    for group in trainer.optimizer.param_groups:
        by_lr.setdefault(group["initial_lr"], set()).update(id(p) for p in group["params"])
    assert sorted(by_lr) == pytest.approx([LR, 16 * LR])
    b_matrices = {id(p) for n, p in handle.model.named_parameters() if ".lora_B." in n}
    assert b_matrices and b_matrices <= by_lr[max(by_lr)]


@pytest.mark.slow
def test_a_plain_trainer_whose_optimiser_lacks_a_declared_group_is_refused_naming_it(tmp_path):
    model = tiny_deberta(seed=0)
    handle = apply_method(model, {"name": "peft_loraplus", "kind": "peft", "r": 2, "loraplus_lr_ratio": 16.0})
    trainer = PlainMeanLossTrainer(model=handle.model, args=train_args(tmp_path), train_dataset=Examples(),
                                   callbacks=[AdaLoRACallback(handle)])
    with pytest.raises(ValueError, match=r"does not hold the parameter groups of method 'peft_loraplus' as declared "
                                         r"by handle\.optimizer_param_groups\(\): group \d \(lr 0\.08, weight_decay 0, "
                                         r"\d+ tensors\): \d+ of them missing or at another lr"):
        trainer.train()
    assert trainer.state.global_step == 0


@pytest.mark.slow
def test_a_parameter_the_kind_keeps_out_of_the_optimiser_never_enters_the_trainers(tmp_path):
    """A SoRA-like kind updates its gates itself (tests/contract_kinds.py): AdaLoRATrainer leaves them out of
    AdamW; a plain Trainer, which would put them in, is refused naming them."""
    handle = apply_method(tiny_deberta(seed=0), {"name": "test_proximal_gates"})
    trainer = MeanLossTrainer(model=handle.model, args=train_args(tmp_path, max_steps=4), train_dataset=Examples(),
                              callbacks=[AdaLoRACallback(handle)])
    trainer.train()
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(gate) in held for gate in handle.gates())
    assert handle.rank_pattern() != dict.fromkeys(handle.adapted, 2)  # the kind's own step pruned
    plain = PlainMeanLossTrainer(model=handle.model, args=train_args(tmp_path / "plain"), train_dataset=Examples(),
                                 callbacks=[AdaLoRACallback(handle)])
    with pytest.raises(ValueError, match=r"parameters the method keeps out of the optimiser are in it: "
                                         r"\['deberta\.encoder\.layer\.0\.attention\.self\.query_proj\.gate'"):
        plain.train()


@pytest.mark.slow
def test_a_trainer_run_whose_allocator_never_ran_fails_naming_the_cause(tmp_path):
    model = tiny_deberta(seed=0)
    handle = apply_method(model, {**OURS, "name": "forgetful", "kind": "test_adalora_no_allocator"})
    trainer = MeanLossTrainer(model=model, args=train_args(tmp_path, max_steps=8), train_dataset=Examples(),
                              callbacks=[AdaLoRACallback(handle)])
    with pytest.raises(AllocationNotRun, match=r"method 'forgetful': its budget schedule must have changed the ranks "
                                               r".*allocator runs: 0\): the allocator never ran: call handle\.step"):
        trainer.train()


def test_a_wrong_peft_total_step_is_replaced_with_the_trainers_max_steps(tmp_path):
    """PEFT's schedule with total_step=1000 would still be pruning at step 16; the callback warns
    and runs it to the Trainer's T, so the final budget is reached."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _, lambdas, _ = run_trainer("peft", tmp_path, total_step=1000)
    assert any("total_step is 1000" in str(w.message) for w in caught)
    assert sum(kept_ranks(lambdas).values()) == TARGET_R * len(lambdas)
    assert model.peft_config["default"].total_step == STEPS


@pytest.mark.slow
def test_the_loss_mixin_needs_the_callback(tmp_path):
    model, _, trainer_cls, _ = build("ours")
    trainer = trainer_cls(model=model, args=train_args(tmp_path), train_dataset=Examples())
    with pytest.raises(RuntimeError, match="needs exactly one AdaLoRACallback"):
        trainer.train()


def test_a_target_that_is_neither_kind_is_refused():
    with pytest.raises(TypeError, match="apply_method"):
        AdaLoRACallback(tiny_deberta())


def test_the_penalty_enters_once_per_optimiser_step_under_either_loss_scaling(tmp_path):
    """With 2 accumulation steps the Trainer divides a per-batch loss by 2, or leaves a loss it
    takes as normalised over the accumulated batch alone; the penalty then enters at half weight."""
    model, handle, _, _ = build("ours")
    batch = default_data_collator([Examples()[i] for i in range(BATCH)])
    expected = model(**batch).loss + handle.regularization_loss()
    for scaled, weight in ((False, 1.0), (True, 0.5), (None, 0.5)):  # None: DeBERTa accepts loss kwargs
        trainer_cls = type("T", (AdaLoRATrainer,), {"loss_is_scaled_for_ga": scaled})
        trainer = trainer_cls(model=model, args=train_args(tmp_path, grad_accum=2), train_dataset=Examples(),
                              callbacks=[AdaLoRACallback(handle)])
        loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(2 * BATCH))
        reg = handle.regularization_loss()
        assert torch.equal(loss, model(**batch).loss + reg * weight), scaled
        assert weight == 0.5 or torch.equal(loss, expected)
    model.eval()
    assert torch.equal(trainer.compute_loss(model, batch), model(**batch).loss)  # evaluation: the task loss


@pytest.mark.slow
def test_the_documented_examples_run_and_prune(tmp_path, monkeypatch):
    """docs/trainer_callback.md's two complete examples, executed as written (40 steps each)."""
    import re

    monkeypatch.chdir(tmp_path)  # they write their output_dir to the working directory
    doc = (Path(__file__).parents[1] / "docs" / "trainer_callback.md").read_text()
    ours, theirs = re.findall(r"```python\n(.*?)```", doc, re.S)
    namespace: dict = {}
    exec(compile(ours, "trainer_callback.md[0]", "exec"), namespace)
    assert sum(namespace["handle"].rank_pattern().values()) == 2 * 12  # target_r x the 12 adapted matrices
    assert (tmp_path / "adalora_trainer_demo" / "checkpoint-20" / STATE_FILE).is_file()
    namespace = {}
    exec(compile(theirs, "trainer_callback.md[1]", "exec"), namespace)
    pattern = namespace["model"].peft_config["default"].rank_pattern
    assert sum(map(sum, pattern.values())) == 2 * 6
