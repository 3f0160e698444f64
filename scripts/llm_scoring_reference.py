"""Compute the lm-evaluation-harness reference values that tests/test_llm_scoring.py checks against.

Run in an environment that has lm-evaluation-harness besides this project's dependencies, e.g.::

    python -m venv --system-site-packages /tmp/lmeval && . /tmp/lmeval/bin/activate
    pip install --no-deps lm_eval==0.4.13 && pip install sacrebleu sqlitedict word2number pytablewriter
    python scripts/llm_scoring_reference.py        # rewrites tests/fixtures/llm_scoring_reference.json

It runs the harness's own code paths (its GSM8K task config and filters, ``ConfigurableTask.process_results``
for multiple choice, ``HFLM.loglikelihood``) on hand-made cases and on the tiny Llama stored in
tests/fixtures/llm/tiny_llama (built here, once, from a seed, when missing).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "tests" / "fixtures" / "llm" / "tiny_llama"
OUT = ROOT / "tests" / "fixtures" / "llm_scoring_reference.json"

GSM8K_CASES = [  # (generation, reference solution)
    ("She has 3 + 4 = 7 apples.\n#### 7", "3 + 4 = 7\n#### 7"),
    ("The answer is 1,200 dollars. #### 1,200", "total 1200\n#### 1200"),
    ("#### $45.", "so 45\n#### 45"),
    ("It costs 12 then 18 so 30", "12 + 18 = 30\n#### 30"),
    ("#### 5\nQuestion: what is 2+2? #### 4", "#### 5"),
    ("no number here", "#### 3"),
    ("#### -2.5", "#### -2.5"),
    ("We get 10 and then 20.\n\n#### 10", "#### 20"),
    ("The total is 56.", "#### 56"),
    ("#### 7 <|im_end|> #### 8", "#### 7"),
]
MC_CASES = [  # (log-likelihoods, choices, gold)
    ([-3.0, -2.0, -5.0], ["a cat", "dog", "a large horse"], 1),
    ([-10.0, -9.0], ["the first very long answer", "no"], 0),
    ([-4.0, -4.0, -1.0], ["x", "y", "zzzzzzzzzz"], 0),
    ([-2.0, -2.0], ["same", "same"], 0),
    ([-6.0, -7.0, -8.0, -2.0], ["aa", "bbbb", "cccccc", "d"], 3),
]
LL_CASES = [  # (context, continuation)
    ("Question: the cat sat on the", " mat"),
    ("Answer: ", "yes it is"),
    ("", "hello world"),
    ("The topic of this article is", " business"),
    ("One two three", " four five six"),
]


def build_tiny_llama() -> None:
    """A 2-layer Llama and a 300-token byte-level BPE tokenizer, seeded: the fixture the test loads."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [c for pair in LL_CASES for c in pair] + [g for g, _ in GSM8K_CASES] * 3
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(MODEL_DIR)
    tokenizer.save_pretrained(MODEL_DIR)


def gsm8k_reference() -> list[dict]:
    import lm_eval
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())
    metric = {k: v for k, v in config["metric_list"][0].items() if k not in ("metric", "aggregation", "higher_is_better")}
    until = config["generation_kwargs"]["until"]
    out = []
    for generation, reference in GSM8K_CASES:
        cut = min([generation.find(s) for s in until if s in generation] + [len(generation)])
        text = generation[:cut]  # HFLM's generate_until stops at the first of `until`
        row = {"generation": generation, "reference": reference}
        for flt in config["filter_list"]:
            step = flt["filter"][0]
            regex = RegexFilter(regex_pattern=step["regex_pattern"], group_select=step.get("group_select", 0))
            extracted = regex.apply([[text]], [None])[0][0]
            row[flt["name"]] = float(exact_match_hf_evaluate([extracted], [reference], **metric)["exact_match"])
        out.append(row)
    return out


def mc_reference() -> list[dict]:
    from lm_eval.api.task import ConfigurableTask

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for lls, choices, gold in MC_CASES:
            data = Path(tmp) / "mc.jsonl"
            data.write_text(json.dumps({"q": "?", "choices": choices, "gold": gold}) + "\n")
            task = ConfigurableTask(config={
                "task": "mc_ref", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{q}}",
                "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
                "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
            })
            doc = task.dataset["test"][0]
            scores = task.process_results(doc, [(ll, False) for ll in lls])
            out.append({"loglikelihoods": lls, "choices": choices, "gold": gold,
                        "acc": float(scores["acc"]), "acc_norm": float(scores["acc_norm"])})
    return out


def loglikelihood_reference() -> list[dict]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(MODEL_DIR), device="cpu", batch_size=1, dtype="float32")
    cases = [*LL_CASES, greedy_case(lm)]
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in cases]
    results = lm.loglikelihood(requests)
    return [{"context": c, "continuation": x, "loglikelihood": float(ll), "is_greedy": bool(g)}
            for (c, x), (ll, g) in zip(cases, results, strict=True)]


def greedy_case(lm) -> tuple[str, str]:
    """A continuation that is the model's own greedy next token, so ``is_greedy`` is checked both ways."""
    import torch

    context = "One two three"
    ids = lm.tokenizer.encode(context, add_special_tokens=False)
    with torch.no_grad():
        token = int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    return context, lm.tokenizer.decode([token])


def main() -> None:
    import lm_eval

    if not (MODEL_DIR / "config.json").is_file():
        build_tiny_llama()
    reference = {"lm_eval_version": lm_eval.__version__, "gsm8k": gsm8k_reference(), "multiple_choice": mc_reference(),
                 "loglikelihood": loglikelihood_reference()}
    OUT.write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
