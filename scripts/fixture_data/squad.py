"""``rajpurkar/squad`` and ``rajpurkar/squad_v2`` fixtures: towns, facts and (un)answerable questions."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from .common import pick, write_jsonl

SQUAD_TRAIN_ROWS = 40
SQUAD_VALIDATION_ROWS = 12


TOWN_SYL_A = ["Var", "Dun", "Kel", "Mor", "Ost", "Bran", "Tal", "Wen", "Hal", "Lind", "Ser", "Cor"]
TOWN_SYL_B = ["holm", "mere", "by", "stead", "ford", "wick", "haven", "dale", "ton", "vik"]
RIVERS = ["Dovra", "Ellen", "Mursk", "Tessel", "Avon Minor", "Kalla", "Sorrow", "Brenna"]
FOUNDERS = [
    "Oskar Lind",
    "Marta Vell",
    "Henrik Dahl",
    "Agnes Korr",
    "Pieter Vos",
    "Ruth Almsey",
    "Tobias Wren",
    "Ilse Brand",
]
INDUSTRIES = [
    "shipbuilding",
    "wool weaving",
    "salt mining",
    "glassmaking",
    "cheese making",
    "timber",
    "clockmaking",
    "fishing",
]
LANDMARKS = [
    "Old Corn Exchange",
    "Bell Tower",
    "Stone Bridge",
    "Guild Hall",
    "Lantern House",
    "North Gate",
    "Copper Chapel",
]
MONTHS = ["March", "April", "May", "June", "July", "August", "September", "October"]
FESTIVAL = ["lanterns", "boats", "apples", "music", "kites", "bread"]
FILLERS = [
    "Visitors often describe the narrow streets as quiet and {adj}.",
    "The climate is mild, with {weather} during most of the winter months.",
    "A small museum near the harbour keeps maps, tools and letters from the early years.",
    "Most houses in the old quarter are built from grey stone and painted wooden beams.",
    "The local school was enlarged twice during the last century to make room for more pupils.",
    "A weekly market fills the main square with stalls selling fruit, fish and {goods}.",
    "Several walking paths lead from the edge of town into the {terrain} beyond.",
    "Regular buses connect the town with the larger cities further along the coast.",
    "The town council meets once a month in a room above the public library.",
    "In recent years a number of young families have moved to the area from the cities.",
    "Many streets are named after sailors, merchants and teachers who once lived there.",
    "During the summer the population grows as tourists arrive for the beaches and hills.",
    "An old railway line, closed long ago, has been turned into a path for cyclists.",
    "The surrounding farms produce barley, potatoes and a little honey each year.",
]
FILL_ADJ = ["charming", "peaceful", "pleasant", "crowded", "windy", "colourful"]
FILL_WEATHER = ["rain and strong winds", "light snow", "grey skies and fog", "cold clear nights"]
FILL_GOODS = ["woollen goods", "pottery", "fresh bread", "old books"]
FILL_TERRAIN = ["hills", "forests", "marshes", "moors"]


def squad_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:24]


def make_town(rng: random.Random, used: set[str]) -> dict:
    while True:
        name = pick(rng, TOWN_SYL_A) + pick(rng, TOWN_SYL_B)
        if name not in used:
            used.add(name)
            break
    year = rng.randrange(1100, 1800)
    return {
        "name": name,
        "year": str(year),
        "founder": pick(rng, FOUNDERS),
        "river": pick(rng, RIVERS),
        "population": f"{rng.randrange(2, 90)},{rng.randrange(100, 999)}",
        "industry": pick(rng, INDUSTRIES),
        "landmark": pick(rng, LANDMARKS),
        "landmark_year": str(rng.randrange(year + 20, 1990)),
        "month": pick(rng, MONTHS),
        "festival": pick(rng, FESTIVAL),
    }


# (attribute, sentence template, answer variants (first = main span), question templates)
FACTS = [
    (
        "year",
        "{name} was founded in {year} by {founder}.",
        ["{year}", "in {year}"],
        ["When was {name} founded?", "In what year was {name} founded?"],
    ),
    (
        "founder",
        "{name} was founded in {year} by {founder}.",
        ["{founder}"],
        ["Who founded {name}?", "Who was the founder of {name}?"],
    ),
    (
        "river",
        "The town lies on the banks of the {river} River.",
        ["{river} River", "the {river} River", "{river}"],
        ["Which river does {name} lie on?", "On the banks of which river is {name}?"],
    ),
    (
        "population",
        "At the last census its population was {population}.",
        ["{population}"],
        [
            "What was the population of {name} at the last census?",
            "How many people lived in {name} at the last census?",
        ],
    ),
    (
        "industry",
        "For centuries the main industry of the town has been {industry}.",
        ["{industry}"],
        ["What is the main industry of {name}?", "Which industry has dominated {name} for centuries?"],
    ),
    (
        "landmark",
        "Its best-known building is the {landmark}, completed in {landmark_year}.",
        ["{landmark}", "the {landmark}"],
        ["What is the best-known building in {name}?", "Which building in {name} is the most famous?"],
    ),
    (
        "landmark_year",
        "Its best-known building is the {landmark}, completed in {landmark_year}.",
        ["{landmark_year}", "in {landmark_year}"],
        ["When was the {landmark} in {name} completed?", "In what year was the {landmark} finished?"],
    ),
    (
        "month",
        "Every {month} the town holds a festival of {festival} that draws large crowds.",
        ["{month}", "Every {month}"],
        [
            "In which month does {name} hold its festival?",
            "When is the festival of {festival} held in {name}?",
        ],
    ),
]
FACT_SENTENCES = {}
for _attr, _sent, _ans, _qs in FACTS:
    FACT_SENTENCES.setdefault(_sent, []).append(_attr)


def build_context(
    rng: random.Random, town: dict, n_filler: int, omit: set[str]
) -> tuple[str, dict[str, int]]:
    """Return the paragraph and the char offset of each fact sentence (keyed by template)."""
    fact_sents = [s for s in FACT_SENTENCES if not set(FACT_SENTENCES[s]) & omit]
    first = fact_sents[0] if fact_sents and fact_sents[0].startswith("{name} was founded") else None
    rest = [s for s in fact_sents if s != first]
    fillers = [pick(rng, FILLERS) for _ in range(n_filler)]
    body: list[tuple[str, str | None]] = [(s, s) for s in rest] + [(f, None) for f in fillers]
    rng.shuffle(body)
    if first is not None:
        body.insert(0, (first, first))
    else:
        body.insert(0, (f"{town['name']} is a small town in the north of the country.", None))
    text, offsets = "", {}
    fill_vals = {
        "adj": pick(rng, FILL_ADJ),
        "weather": pick(rng, FILL_WEATHER),
        "goods": pick(rng, FILL_GOODS),
        "terrain": pick(rng, FILL_TERRAIN),
    }
    for tmpl, key in body:
        sent = tmpl.format(**town, **fill_vals)
        if text:
            text += " "
        if key is not None:
            offsets[key] = len(text)
        text += sent
    return text, offsets


def answer_spans(
    context: str, sent_start: int, sentence: str, variants: list[str]
) -> tuple[list[str], list[int]]:
    texts, starts = [], []
    for v in variants:
        i = sentence.find(v)
        if i < 0:
            # variants such as "the X" may differ only in case from the sentence
            continue
        texts.append(v)
        starts.append(sent_start + i)
        assert context[sent_start + i : sent_start + i + len(v)] == v
    return texts, starts


def squad_split(
    seed: int, n_rows: int, questions_per_context: int, v2: bool, multi_answers: bool, tag: str
) -> list[dict]:
    rng = random.Random(seed)
    used: set[str] = set()
    rows: list[dict] = []
    ctx_i = 0
    while len(rows) < n_rows:
        town = make_town(rng, used)
        long_ctx = ctx_i % 2 == 0
        n_filler = rng.randrange(10, 15) if long_ctx else rng.randrange(1, 4)
        omit: set[str] = set()
        if v2:
            omit = {pick(rng, ["founder", "population", "industry", "month"])}
            if "founder" in omit:
                omit.add("year")
        context, offsets = build_context(rng, town, n_filler, omit)
        present = [f for f in FACTS if f[0] not in omit]
        rng.shuffle(present)
        k = min(questions_per_context, n_rows - len(rows))
        for q_i in range(k):
            unanswerable = v2 and (len(rows) % 3 == 2)
            if unanswerable:
                missing = [f for f in FACTS if f[0] in omit]
                if missing and rng.random() < 0.6:
                    attr, _s, _v, qs = pick(rng, missing)
                    question = pick(rng, qs).format(**town)
                else:  # ask about a town that is not in the paragraph
                    other = make_town(rng, set(used))
                    attr, _s, _v, qs = pick(rng, FACTS)
                    question = pick(rng, qs).format(**{**town, "name": other["name"]})
                answers = {"text": [], "answer_start": []}
            else:
                attr, sent_t, variants, qs = present[q_i % len(present)]
                question = pick(rng, qs).format(**town)
                sentence = sent_t.format(**town)
                vs = [v.format(**town) for v in variants]
                if multi_answers:
                    # SQuAD validation: 2-3 annotator answers (duplicates allowed).
                    chosen = vs[: rng.randrange(2, 4)]
                    if len(chosen) < 2:
                        chosen = [vs[0], vs[0]]
                    elif len(chosen) == 2 and rng.random() < 0.5:
                        chosen = [vs[0], vs[1], vs[0]]
                else:
                    chosen = [vs[0]]
                texts, starts = answer_spans(context, offsets[sent_t], sentence, chosen)
                answers = {"text": texts, "answer_start": starts}
            rows.append(
                {
                    "id": squad_id(tag, seed, ctx_i, q_i),
                    "title": town["name"],
                    "context": context,
                    "question": question,
                    "answers": answers,
                }
            )
        ctx_i += 1
    return rows


def make_squad(out: Path) -> dict[str, int]:
    counts = {}
    for v, name in [(False, "squad_v1"), (True, "squad_v2")]:
        for s, (split, n, multi) in enumerate(
            [("train", SQUAD_TRAIN_ROWS, False), ("validation", SQUAD_VALIDATION_ROWS, True)]
        ):
            rows = squad_split(3000 + 10 * int(v) + s, n, 4 if split == "train" else 3, v, multi, name)
            p = out / name / f"{split}.jsonl"
            counts[str(p.relative_to(out))] = write_jsonl(p, rows)
    return counts
