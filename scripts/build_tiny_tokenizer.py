"""Train the small WordPiece tokenizer the project ships in ``experiments/assets/tiny_tokenizer``.

It is trained offline with the ``tokenizers`` library on the text of the project's own
fixture files (``tests/fixtures/data``, written by ``scripts/make_fixtures.py``; run that
first, it is deterministic) and saved as a ``transformers.PreTrainedTokenizerFast``
directory, so ``AutoTokenizer.from_pretrained(dir)`` loads it.

BERT-style: lowercase ``BertNormalizer``, ``BertPreTokenizer``, WordPiece with ``##``
continuation pieces, post-processor ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` with
token type ids, offsets (fast tokenizer). Special tokens ``[PAD]`` (id 0), ``[UNK]``,
``[CLS]``, ``[SEP]``, ``[MASK]``; for BART use bos=[CLS], eos=[SEP], pad=[PAD].
Every printable ASCII character is in the vocabulary both as a word-initial piece and as a
``##`` continuation piece, so unseen ASCII words never become ``[UNK]``.

Usage: ``python scripts/build_tiny_tokenizer.py [--fixtures DIR] [--out DIR] [--vocab-size N]``
"""

from __future__ import annotations

import argparse
import json
import string
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "data"
DEFAULT_OUT = REPO_ROOT / "adalora" / "assets" / "tiny_tokenizer"

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
COVERAGE_CHARS = string.ascii_lowercase + string.digits + string.punctuation
MODEL_MAX_LENGTH = 512


def _strings(obj) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def fixture_texts(fixtures: Path) -> list[str]:
    """Every text field of every fixture row (ids and hashes excluded), in a fixed order."""
    files = sorted(fixtures.rglob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no fixtures under {fixtures}; run `python scripts/make_fixtures.py` first")
    texts = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            row.pop("id", None)
            texts.extend(_strings(row))
    return texts


def wordpiece_vocab(texts: list[str], normalizer, pre_tokenizer, vocab_size: int) -> list[str]:
    """A deterministic WordPiece vocabulary, most useful pieces first.

    ``tokenizers.trainers.WordPieceTrainer`` breaks ties between equally frequent merges in
    hash-map order, so its vocabulary changes from run to run and the committed asset would
    not be reproducible. The vocabulary here is: special tokens, every ASCII character as a
    word-initial and as a ``##`` piece, every corpus word (by frequency, then alphabetically),
    then the most frequent word prefixes and ``##`` suffixes (2-6 characters) up to
    ``vocab_size``. The tokenizer that uses it is a plain ``tokenizers`` WordPiece model
    (greedy longest match), so unseen words are split into known pieces.
    """
    words: Counter[str] = Counter()
    for text in texts:
        normed = normalizer.normalize_str(text)
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normed))
    vocab: list[str] = list(SPECIAL_TOKENS)
    seen = set(vocab)

    def add(piece: str) -> None:
        if piece not in seen:
            seen.add(piece)
            vocab.append(piece)

    for c in COVERAGE_CHARS:
        add(c)
    for c in COVERAGE_CHARS:
        add("##" + c)
    for c in sorted({c for w in words for c in w}):
        add(c)
        add("##" + c)
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        add(w)
    pieces: Counter[str] = Counter()
    for w, n in words.items():
        for k in range(2, min(6, len(w) - 1) + 1):
            pieces[w[:k]] += n
            pieces["##" + w[-k:]] += n
    for p, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        add(p)
    return vocab


def build(fixtures: Path = DEFAULT_FIXTURES, out: Path = DEFAULT_OUT, vocab_size: int = 1500):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = wordpiece_vocab(fixture_texts(fixtures), normalizer, pre_tokenizer, vocab_size)
    wp = models.WordPiece(
        vocab={t: i for i, t in enumerate(vocab)},
        unk_token="[UNK]",
        continuing_subword_prefix="##",
        max_input_chars_per_word=100,
    )
    final = Tokenizer(wp)
    final.normalizer = normalizer
    final.pre_tokenizer = pre_tokenizer
    final.add_special_tokens(SPECIAL_TOKENS)
    ids = {t: final.token_to_id(t) for t in SPECIAL_TOKENS}
    assert ids == {t: i for i, t in enumerate(SPECIAL_TOKENS)}, ids
    final.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    final.decoder = decoders.WordPiece(prefix="##")

    hf = PreTrainedTokenizerFast(
        tokenizer_object=final,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    hf.save_pretrained(str(out))
    # transformers 5 writes its new class name "TokenizersBackend"; the generic fast class name
    # loads with AutoTokenizer in transformers 4.x and 5.x alike.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    # save_pretrained may skip special_tokens_map.json (transformers 5); write it explicitly.
    smap = out / "special_tokens_map.json"
    if not smap.exists():
        smap.write_text(
            json.dumps(
                {
                    "bos_token": "[CLS]",
                    "cls_token": "[CLS]",
                    "eos_token": "[SEP]",
                    "mask_token": "[MASK]",
                    "pad_token": "[PAD]",
                    "sep_token": "[SEP]",
                    "unk_token": "[UNK]",
                },
                indent=2,
            )
            + "\n"
        )
    return hf


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--vocab-size", type=int, default=1500)
    args = ap.parse_args(argv)
    hf = build(args.fixtures, args.out, args.vocab_size)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(
        f"vocab size {len(hf)}; wrote {sorted(p.name for p in args.out.iterdir())} "
        f"({size / 1024:.1f} KiB) to {args.out}"
    )


if __name__ == "__main__":
    main()
