"""protocol=heldout for the causal-LM tasks: the checkpoint is chosen on rows held out of the training data
(scored as the reported sets are, keyed as they are), the test sets are reported at the chosen and final steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.evaluate import reevaluate
from experiments.llm_scoring import gsm8k_scores
from experiments.metrics import peft_accuracy, peft_parse_answer
from experiments.protocol import best_eval
from experiments.runner import run
from experiments.spec import ConfigError, resolve
from experiments.tasks import build_task
from experiments.tasks.heldout import HELDOUT_SPLIT
from tests.conftest import compose
from tests.test_causal_lm_task import DATA, task_cfg


def _cfg(out: Path, task: str, *extra: str):
    return compose([f"task={task}", "model=tiny_llama", "method=adalora", "budget=llm_r4", f"output_root={out}",
                    "trainer.progress=false", *extra])


def _heldout_task(name: str):
    """The task as the runner prepares it under protocol=heldout, its data loaded."""
    task = build_task(task_cfg(name))
    resolve(compose([f"task={name}", "model=tiny_llama", "method=lora", "budget=llm_r4",
                     "protocol=heldout"])).protocol.prepare(task)
    task.load()
    return task


def _file_rows(path: Path) -> list[str]:
    return [json.dumps(json.loads(line), sort_keys=True) for line in path.read_text().splitlines() if line.strip()]


def _rows(dataset, columns) -> list[str]:
    return [json.dumps({c: row[c] for c in columns}, sort_keys=True) for row in dataset]


@pytest.mark.parametrize(("name", "train_file", "held"), [
    ("tiny_gsm8k", DATA / "gsm8k" / "train.jsonl", 12),
    ("tiny_metamathqa_gsm8k", DATA / "metamathqa" / "train.jsonl", 8),
    ("tiny_commonsense", DATA / "commonsense_170k" / "train.jsonl", 8),
])
def test_decoder_heldout_rows_are_training_rows_disjoint_from_what_trains(name, train_file, held):
    task = _heldout_task(name)
    columns = list(json.loads(train_file.read_text().splitlines()[0]))
    train, validation = (_rows(task.load()[s], columns) for s in (task.train_split, HELDOUT_SPLIT))
    assert len(validation) == held  # the two split the file's rows: none trains and selects (the fixtures repeat rows)
    assert sorted(train + validation) == sorted(_file_rows(train_file)) and len(train) == len(_file_rows(train_file)) - held


def test_metamathqa_heldout_rows_are_scored_as_gsm8k_with_peft_s_answer():
    """Held-out MetaMathQA rows become GSM8K rows (query -> question, "The answer is: N" -> "#### N"): a model that
    answers as the training data does scores 100 on the selection metric and on PEFT's, 0 on the strict one."""
    task = _heldout_task("tiny_metamathqa_gsm8k")
    name, scoring = task.heldout_eval
    rows = list(scoring.load()[HELDOUT_SPLIT])
    assert name == "gsm8k" and scoring.metric_names() == ["exact_match_strict", "exact_match_flexible", "peft_accuracy"]
    assert all(r["question"] == r["query"] and r["answer"] == f"#### {peft_parse_answer(r['response'])}" for r in rows)
    generations, answers = [r["response"] for r in rows], [scoring.answer_format.format(**r) for r in rows]
    assert gsm8k_scores(generations, answers) == {"exact_match_strict": 0.0, "exact_match_flexible": 1.0}
    assert peft_accuracy(generations, answers) == 100.0


def test_commonsense_heldout_rows_are_parsed_with_their_own_answer_vocabulary():
    """commonsense_170k mixes the eight tasks: each held-out row is parsed with the vocabulary of its gold answer."""
    task = _heldout_task("tiny_commonsense")
    name, scoring = task.heldout_eval
    assert name == "commonsense_170k" and task.main_metric == "avg"
    generations = ["the correct answer is solution2", "answer3 is it", "true", "ending1", "option2 or option1"]
    answers = ["solution2", "answer1", "true", "ending1", "option1"]
    assert scoring._parsed_accuracy(generations, answers) == 60.0


@pytest.mark.parametrize(("override", "message"), [
    ("~task.heldout_eval", r"task\.heldout_eval is not set, and a task with task\.eval_sets needs it.*heldout_eval: "),
    ("+task.heldout_eval.split=test", r"task\.heldout_eval has unknown key\(s\) \['split'\]"),
    ("task.heldout_eval.as=winogrande", r"task\.heldout_eval scores the held-out rows as \['winogrande_.*"
                                        r"without the task's main metric 'gsm8k_exact_match_flexible'"),
])
def test_a_bad_heldout_eval_is_a_config_error_naming_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(_cfg(tmp_path, "tiny_metamathqa_gsm8k", "protocol=heldout", override))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "validation_keys"), [
    ("tiny_gsm8k", None), ("tiny_metamathqa_gsm8k", None),  # None: the test set's keys
    ("tiny_commonsense", {"commonsense_170k_accuracy", "avg", "avg_accuracy"}),
])
def test_a_decoder_run_under_heldout_selects_on_the_heldout_rows_and_reports_the_test_set(tmp_path, name,
                                                                                         validation_keys):
    records, cfgs = {}, {}
    for protocol in ("paper", "heldout"):
        cfgs[protocol] = _cfg(tmp_path / protocol, name, f"protocol={protocol}", "trainer.max_steps=6",
                              "trainer.eval_every=2")
        records[protocol] = run(cfgs[protocol])
        assert records[protocol]["status"] == "success", records[protocol].get("reason")
    paper, heldout = records["paper"]["metrics"], records["heldout"]["metrics"]
    main = paper["main_metric"]
    validation = heldout["validation_evals"]
    assert heldout["selection_split"] == "validation" and [e["step"] for e in validation] == [2, 4, 6]
    expected = validation_keys or set(paper["best"]) - {"step", "epoch"}  # keyed as the test set's
    assert all(set(e) - {"step", "epoch"} == expected and main in e for e in validation), (validation, expected)
    assert heldout["best"]["step"] == best_eval(validation, main)["step"]
    assert [e["step"] for e in heldout["evals"]] == sorted({heldout["best"]["step"], 6})  # test: chosen and last steps
    assert set(heldout["best"]) == set(paper["best"])
    assert records["paper"]["identity"]["hash"] != records["heldout"]["identity"]["hash"]
    assert records["heldout"]["ranks"]["allocation"]["allocator_runs"] > 0
    for which in ("best", "final"):  # the recorded test-set numbers are those of the saved weights
        out = reevaluate(cfgs["heldout"].run_dir, which)
        assert out["reproduced"], (which, out["metrics"], out["recorded"])


def test_heldout_eval_is_outside_a_paper_runs_identity_and_inside_a_heldout_runs(tmp_path):
    """``task.heldout_eval`` only says how protocol=heldout scores its carved rows: editing it must not change
    a paper run's hash (nor pool two held-out runs scored differently)."""
    from experiments.runner import run_identity_block

    def hash_of(*extra: str) -> str:
        return run_identity_block(_cfg(tmp_path, "tiny_metamathqa_gsm8k", *extra))["hash"]

    edit = "+task.heldout_eval.max_new_tokens=4"  # a valid scoring edit
    assert hash_of(edit) == hash_of()
    assert hash_of("protocol=heldout", edit) != hash_of("protocol=heldout") != hash_of()
