"""The causal-LM family end to end through experiments.run on tiny decoders (Llama, Qwen2, GPT-2's Conv1D):
every row trains at its budget, records what ran (allocation proof for AdaLoRA), and reloads to the metrics
it recorded; a resumed run is exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.evaluate import reevaluate
from experiments.runner import run
from tests.conftest import compose

pytestmark = pytest.mark.slow


def llm_run(out, model: str, method: str, task: str = "tiny_gsm8k", *extra: str):
    return compose([f"task={task}", f"model={model}", f"method={method}", "budget=llm_r4", f"output_root={out}",
                    "trainer.progress=false", *extra])


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_qwen2", "tiny_gpt2"])
@pytest.mark.parametrize("method", ["lora", "adalora", "peft_dora", "peft_adalora"])
def test_every_llm_row_trains_meets_its_budget_and_reloads(tmp_path, model, method):
    record = run(llm_run(tmp_path, model, method, "tiny_gsm8k", "trainer.max_steps=6"))
    assert record["status"] == "success", record.get("reason")
    assert set(record["metrics"]["best"]) >= {"exact_match_strict", "exact_match_flexible"}
    params = record["params"]  # the count rule's closest knob: within one rank step (1/r = 25% at r=4) of LoRA r=4
    assert params["budget_gap"] == pytest.approx((params["trainable_paper"] - params["budget_target"])
                                                 / params["budget_target"])
    assert abs(params["budget_gap"]) <= 0.25, params
    if method in ("adalora", "peft_adalora"):
        proof = record["ranks"]["allocation"]
        assert proof["allocator_runs"] > 0 and proof["rank_changes"], proof
    again = reevaluate(record_dir(tmp_path))
    assert again["reproduced"], (again["metrics"], again["recorded"])


def record_dir(root):
    return next(root.rglob("result.json")).parent


def test_multiple_choice_task_runs_and_records_acc_acc_norm_and_the_parsed_accuracy(tmp_path):
    record = run(llm_run(tmp_path, "tiny_llama", "lora", "tiny_piqa", "trainer.max_steps=4"))
    assert record["status"] == "success", record.get("reason")
    assert set(record["metrics"]["best"]) >= {"acc", "acc_norm", "acc_parsed"}
    assert all(0.0 <= record["metrics"]["best"][k] <= 100.0 for k in ("acc", "acc_norm", "acc_parsed"))


@pytest.mark.parametrize(("task", "model"), [("tiny_commonsense", "tiny_llama"), ("tiny_metamathqa_gsm8k", "tiny_llama"),
                                           ("tiny_metamathqa_gsm8k", "tiny_qwen2"), ("tiny_metamathqa_gsm8k", "tiny_gpt2")])
def test_a_task_with_eval_sets_trains_evaluates_every_set_and_records_every_metric(tmp_path, task, model):
    record = run(llm_run(tmp_path, model, "adalora", task, "trainer.max_steps=4"))
    assert record["status"] == "success", record.get("reason")
    sets = list(record["config"]["task"]["eval_sets"])
    per_set = {"tiny_commonsense": ("acc", "acc_norm", "acc_parsed"),
               "tiny_metamathqa_gsm8k": ("exact_match_strict", "exact_match_flexible")}[task]
    expected = {f"{s}_{m}" for s in sets for m in per_set} | {"avg"} | {f"avg_{m}" for m in per_set}
    for evaluation in record["metrics"]["evals"]:
        assert expected <= set(evaluation), sorted(expected - set(evaluation))
    identity = record["identity"]["keys"]["task"]["eval_sets"]  # its data paths relative to the project root
    assert {name: {k: v for k, v in entry.items() if k != "dataset"} for name, entry in identity.items()} == \
        {name: {k: v for k, v in entry.items() if k != "dataset"} for name, entry in record["config"]["task"]["eval_sets"].items()}
    assert record["train"]["task"] == {"prompt_template": "plain"}
    assert record["ranks"]["allocation"]["allocator_runs"] > 0
    again = reevaluate(record_dir(tmp_path))
    assert again["reproduced"], (again["metrics"], again["recorded"])


def test_the_record_says_plain_text_rendered_a_chat_task_on_a_tokenizer_without_a_template(tmp_path):
    record = run(llm_run(tmp_path, "tiny_llama", "lora", "tiny_gsm8k", "task.template=chat", "trainer.max_steps=2"))
    assert record["status"] == "success", record.get("reason")
    assert (record["config"]["task"]["template"], record["train"]["task"]) == ("chat", {"prompt_template": "plain"})


@pytest.mark.parametrize("task", ["tiny_gsm8k", "tiny_metamathqa_gsm8k"])
def test_an_interrupted_llm_run_resumes_to_the_uninterrupted_result(tmp_path, task):
    """Stop after 4 of 8 steps (checkpoint every 4), resume: the same evaluations (every eval set's) and final ranks."""
    from experiments.runner import build
    from experiments.spec import resolve

    extra = ("trainer.max_steps=8", "trainer.checkpoint_every=4", "trainer.eval_every=4", "trainer.keep_checkpoint=true")
    full = run(llm_run(tmp_path / "full", "tiny_llama", "adalora", task, *extra))
    cut_cfg = llm_run(tmp_path / "cut", "tiny_llama", "adalora", task, *extra)
    trainer, _, _ = build(resolve(cut_cfg), Path(cut_cfg.run_dir), None)
    trainer.train(stop_after=4)  # the process "dies" here: only the step-4 checkpoint survives
    del trainer
    resumed = run(cut_cfg)
    assert resumed["status"] == "success"
    assert resumed["metrics"]["evals"] == full["metrics"]["evals"]
    assert resumed["ranks"]["pattern"] == full["ranks"]["pattern"]
    assert resumed["train"]["final_train_loss"] == full["train"]["final_train_loss"]
