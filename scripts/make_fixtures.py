"""Write the small, deterministic JSONL fixtures used by the offline test suite.

Every file is made from the project's own template grammar (no benchmark text) and
follows the column names and types of the hub datasets the real runs load:

* ``nyu-mll/glue``                -> ``tests/fixtures/data/glue/<task>/{train,validation}.jsonl``
  (MNLI: ``validation_matched.jsonl`` and ``validation_mismatched.jsonl``)
* ``rajpurkar/squad``             -> ``tests/fixtures/data/squad_v1/{train,validation}.jsonl``
* ``rajpurkar/squad_v2``          -> ``tests/fixtures/data/squad_v2/{train,validation}.jsonl``
* ``EdinburghNLP/xsum``           -> ``tests/fixtures/data/xsum/{train,validation}.jsonl``
* ``abisee/cnn_dailymail`` (3.0.0) -> ``tests/fixtures/data/cnn_dailymail/{train,validation}.jsonl``

The grammar is simple on purpose: the label of each example is decided by a few words
(sentiment adjectives, agreement, negation, which slot changed, ...), so a 2-layer model
can learn something in a few hundred steps. Output is byte-for-byte reproducible.

Usage: ``python scripts/make_fixtures.py [--out tests/fixtures/data]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "data"

GLUE_TRAIN_ROWS = 48
GLUE_VALIDATION_ROWS = 16
SQUAD_TRAIN_ROWS = 40
SQUAD_VALIDATION_ROWS = 12
SUMM_TRAIN_ROWS = 32
SUMM_VALIDATION_ROWS = 8


# ----------------------------------------------------------------------------- helpers
def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")
            n += 1
    return n


def balanced_labels(rng: random.Random, n: int, labels: list) -> list:
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# ----------------------------------------------------------------------------- lexicon
MOVIE_NOUNS = [
    "film",
    "movie",
    "story",
    "plot",
    "script",
    "soundtrack",
    "ending",
    "cast",
    "dialogue",
    "opening scene",
    "lead actor",
    "camera work",
    "pacing",
    "finale",
]
POS_ADJ = [
    "wonderful",
    "brilliant",
    "charming",
    "delightful",
    "moving",
    "clever",
    "superb",
    "gripping",
    "warm",
    "funny",
    "beautiful",
    "fresh",
    "touching",
    "inventive",
]
NEG_ADJ = [
    "dull",
    "tedious",
    "clumsy",
    "boring",
    "awful",
    "bland",
    "messy",
    "shallow",
    "tiresome",
    "weak",
    "lifeless",
    "predictable",
    "sloppy",
    "painful",
]
INTENS = ["", "very ", "truly ", "rather ", "quite ", "remarkably ", "utterly "]

SING_SUBJ = [
    "the dog",
    "the teacher",
    "my sister",
    "the old man",
    "a child",
    "the farmer",
    "the pilot",
    "our neighbour",
    "the baker",
    "the student",
]
PLUR_SUBJ = [
    "the dogs",
    "the teachers",
    "my sisters",
    "the old men",
    "the children",
    "the farmers",
    "the pilots",
    "our neighbours",
    "the bakers",
    "the students",
]
VERBS = [
    ("chases", "chase"),
    ("reads", "read"),
    ("paints", "paint"),
    ("carries", "carry"),
    ("finds", "find"),
    ("likes", "like"),
    ("cleans", "clean"),
    ("sells", "sell"),
]
OBJECTS = [
    "the ball",
    "a letter",
    "the fence",
    "a basket",
    "the red box",
    "the book",
    "an apple",
    "the kite",
    "the boat",
    "a map",
]

COMPANIES = [
    "Norvell Systems",
    "Brightwater Foods",
    "Caldera Motors",
    "Pellham Bank",
    "Ostrava Energy",
    "Kinsley Media",
    "Marlowe Telecom",
    "Tavish Airlines",
]
METRICS = ["profit", "revenue", "sales", "net income", "operating profit", "turnover"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
QUARTERS = ["first quarter", "second quarter", "third quarter", "fourth quarter"]

HOWTO = [
    ("learn", "new language"),
    ("fix", "broken bicycle"),
    ("cook", "simple curry"),
    ("train", "young puppy"),
    ("grow", "tomato plant"),
    ("clean", "leather jacket"),
    ("build", "wooden shelf"),
    ("write", "short story"),
    ("start", "small garden"),
    ("repair", "leaking tap"),
    ("plan", "cheap holiday"),
    ("paint", "kitchen wall"),
]

PEOPLE = ["a man", "a woman", "a boy", "a girl", "a chef", "a musician", "a dancer", "a player"]
ACTIONS = ["playing", "slicing", "carrying", "throwing", "holding", "washing", "kicking", "opening"]
STS_OBJECTS = ["guitar", "tomato", "suitcase", "ball", "flute", "window", "cake", "drum"]

NAMES = ["Anna", "Tomas", "Lena", "Marco", "Priya", "Jonas", "Elif", "Kofi", "Sara", "Ivan", "Mira", "Diego"]
MNLI_MATCHED = {
    "objects": ["the lamp", "the ticket", "the guidebook", "the map", "the camera", "the umbrella"],
    "places": ["the hotel", "the station", "the museum", "the harbour", "the market", "the castle"],
    "verbs": [("left", "leave"), ("found", "find"), ("bought", "buy"), ("lost", "lose")],
}
MNLI_MISMATCHED = {
    "objects": ["the report", "the contract", "the invoice", "the laptop", "the badge", "the memo"],
    "places": ["the office", "the archive", "the lab", "the warehouse", "the clinic", "the court"],
    "verbs": [("signed", "sign"), ("checked", "check"), ("filed", "file"), ("printed", "print")],
}
NEUTRAL_TAILS = [
    "because it was raining",
    "before lunch",
    "with a friend",
    "for the second time",
    "without telling anyone",
    "late in the evening",
]

ANIMALS = {
    "otter": ("rivers and lakes", "fish and crabs"),
    "camel": ("hot deserts", "dry plants"),
    "puffin": ("rocky sea cliffs", "small fish"),
    "koala": ("eucalyptus forests", "eucalyptus leaves"),
    "badger": ("woodland burrows", "earthworms"),
    "penguin": ("the cold south", "krill and fish"),
    "lynx": ("northern forests", "hares"),
    "tapir": ("tropical rainforests", "fruit and leaves"),
    "walrus": ("arctic coasts", "clams"),
    "beaver": ("streams and ponds", "tree bark"),
}

ORGS = [
    "the city council",
    "the national library",
    "the river trust",
    "the football club",
    "the science museum",
    "the farmers union",
    "the theatre company",
    "the rail operator",
]
ROLES = ["director", "chairman", "treasurer", "spokesperson", "founder", "head coach"]
ANNOUNCEMENTS = [
    "a new budget",
    "a merger",
    "a summer programme",
    "a hiring freeze",
    "a public inquiry",
    "a new logo",
]


# ----------------------------------------------------------------------------- GLUE
def sst2_row(rng: random.Random, label: int) -> dict:
    adjs = POS_ADJ if label == 1 else NEG_ADJ
    noun = pick(rng, MOVIE_NOUNS)
    s = f"the {noun} is {pick(rng, INTENS)}{pick(rng, adjs)}"
    if rng.random() < 0.5:
        s += f" , and the {pick(rng, MOVIE_NOUNS)} is {pick(rng, adjs)}"
    return {"sentence": s + " ", "label": label}


def cola_row(rng: random.Random, label: int) -> dict:
    verb_s, verb_p = pick(rng, VERBS)
    obj = pick(rng, OBJECTS)
    plural = rng.random() < 0.5
    subj = pick(rng, PLUR_SUBJ if plural else SING_SUBJ)
    verb = verb_p if plural else verb_s
    if label == 1:
        if rng.random() < 0.3:
            s = f"{subj} {verb} {obj} every morning."
        else:
            s = f"{subj} {verb} {obj}."
    else:
        kind = rng.randrange(3)
        if kind == 0:  # agreement error
            s = f"{subj} {verb_s if plural else verb_p} {obj}."
        elif kind == 1:  # word order
            s = f"{verb} {subj} {obj}."
        else:  # doubled determiner / missing verb
            s = f"{subj} {obj} the."
    return {"sentence": cap(s), "label": label}


def mrpc_row(rng: random.Random, label: int) -> dict:
    comp, metric, day, q = (pick(rng, COMPANIES), pick(rng, METRICS), pick(rng, DAYS), pick(rng, QUARTERS))
    n = rng.randrange(2, 40)
    s1 = f"{comp} said on {day} that its {metric} rose {n} percent in the {q}."
    if label == 1:
        s2 = pick(
            rng,
            [
                f"On {day}, {comp} reported that {metric} had increased by {n} percent during the {q}.",
                f"{cap(metric)} at {comp} grew {n} percent in the {q}, the company said on {day}.",
            ],
        )
    else:
        change = rng.randrange(3)
        if change == 0:
            other = pick(rng, [c for c in COMPANIES if c != comp])
            s2 = f"On {day}, {other} reported that {metric} had increased by {n} percent during the {q}."
        elif change == 1:
            s2 = f"{cap(metric)} at {comp} fell {n} percent in the {q}, the company said on {day}."
        else:
            s2 = f"On {day}, {comp} reported that {metric} had increased by {n + 7} percent during the {q}."
    return {"sentence1": s1, "sentence2": s2, "label": label}


def qqp_row(rng: random.Random, label: int) -> dict:
    verb, obj = pick(rng, HOWTO)
    q1 = f"How do I {verb} a {obj}?"
    if label == 1:
        q2 = pick(
            rng,
            [
                f"What is the best way to {verb} a {obj}?",
                f"What are some tips to {verb} a {obj}?",
                f"How can I {verb} a {obj} quickly?",
            ],
        )
    else:
        v2, o2 = pick(rng, [h for h in HOWTO if h != (verb, obj)])
        q2 = pick(rng, [f"What is the best way to {v2} a {o2}?", f"How do I {v2} a {o2}?"])
    return {"question1": q1, "question2": q2, "label": label}


def stsb_row(rng: random.Random, n_changed: int) -> dict:
    slots = [pick(rng, PEOPLE), pick(rng, ACTIONS), pick(rng, STS_OBJECTS)]
    pools = [PEOPLE, ACTIONS, STS_OBJECTS]
    other = list(slots)
    for i in rng.sample(range(3), n_changed):
        other[i] = pick(rng, [w for w in pools[i] if w != slots[i]])
    s1 = f"{cap(slots[0])} is {slots[1]} a {slots[2]}."
    s2 = f"{cap(other[0])} is {other[1]} a {other[2]}."
    score = 5.0 - 1.6 * n_changed + rng.uniform(-0.2, 0.2)
    score = round(min(5.0, max(0.0, score)), 3)
    return {"sentence1": s1, "sentence2": s2, "label": float(score)}


def mnli_row(rng: random.Random, label: int, lex: dict) -> dict:
    name = pick(rng, NAMES)
    obj, place = pick(rng, lex["objects"]), pick(rng, lex["places"])
    past, base = pick(rng, lex["verbs"])
    premise = f"{name} {past} {obj} in {place} this morning."
    if label == 0:
        hyp = pick(rng, [f"{name} {past} something.", f"{name} was in {place}.", f"Someone {past} {obj}."])
    elif label == 1:
        hyp = f"{name} {past} {obj} {pick(rng, NEUTRAL_TAILS)}."
    else:
        hyp = pick(
            rng,
            [
                f"{name} did not {base} {obj}.",
                f"{name} was never in {place}.",
                f"Nobody {past} anything in {place}.",
            ],
        )
    return {"premise": premise, "hypothesis": hyp, "label": label}


def qnli_row(rng: random.Random, label: int) -> dict:
    animal = pick(rng, sorted(ANIMALS))
    habitat, food = ANIMALS[animal]
    ask_home = rng.random() < 0.5
    question = f"Where does the {animal} live?" if ask_home else f"What does the {animal} eat?"
    if label == 0:  # entailment: the sentence answers the question
        sentence = (
            f"The {animal} lives mostly in {habitat}."
            if ask_home
            else f"The {animal} feeds mainly on {food}."
        )
    else:
        if rng.random() < 0.5:  # right animal, wrong fact
            sentence = (
                f"The {animal} feeds mainly on {food}."
                if ask_home
                else f"The {animal} lives mostly in {habitat}."
            )
        else:  # another animal
            other = pick(rng, [a for a in sorted(ANIMALS) if a != animal])
            oh, of = ANIMALS[other]
            sentence = (
                f"The {other} lives mostly in {oh}." if ask_home else f"The {other} feeds mainly on {of}."
            )
    return {"question": question, "sentence": sentence, "label": label}


def rte_row(rng: random.Random, label: int) -> dict:
    name, org, role = pick(rng, NAMES), pick(rng, ORGS), pick(rng, ROLES)
    ann, day = pick(rng, ANNOUNCEMENTS), pick(rng, DAYS)
    s1 = (
        f"{name}, the {role} of {org}, announced {ann} on {day}, saying it would be reviewed again next year."
    )
    if label == 0:
        s2 = pick(rng, [f"{name} works for {org}.", f"{cap(org)} announced {ann}."])
    else:
        s2 = pick(
            rng,
            [
                f"{name} works for {pick(rng, [o for o in ORGS if o != org])}.",
                f"{name} resigned from {org}.",
                f"{cap(org)} cancelled {ann}.",
            ],
        )
    return {"sentence1": s1, "sentence2": s2, "label": label}


def glue_split(seed: int, n: int, labels: list, make: Callable[[random.Random, object], dict]) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for idx, lab in enumerate(balanced_labels(rng, n, labels)):
        row = make(rng, lab)
        row["idx"] = idx
        rows.append(row)
    return rows


def make_glue(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    specs: dict[str, tuple[list, Callable]] = {
        "cola": ([0, 1], cola_row),
        "sst2": ([0, 1], sst2_row),
        "mrpc": ([0, 1], mrpc_row),
        "qqp": ([0, 1], qqp_row),
        "stsb": ([0, 1, 2, 3], stsb_row),  # number of changed slots -> float score
        "qnli": ([0, 1], qnli_row),
        "rte": ([0, 1], rte_row),
    }
    for t, (task, (labels, fn)) in enumerate(specs.items()):
        for s, (split, n) in enumerate([("train", GLUE_TRAIN_ROWS), ("validation", GLUE_VALIDATION_ROWS)]):
            rows = glue_split(1000 + 10 * t + s, n, labels, fn)
            p = out / "glue" / task / f"{split}.jsonl"
            counts[str(p.relative_to(out))] = write_jsonl(p, rows)
    mnli_splits = [
        ("train", GLUE_TRAIN_ROWS, MNLI_MATCHED),
        ("validation_matched", GLUE_VALIDATION_ROWS, MNLI_MATCHED),
        ("validation_mismatched", GLUE_VALIDATION_ROWS, MNLI_MISMATCHED),
    ]
    for s, (split, n, lex) in enumerate(mnli_splits):
        rows = glue_split(2000 + s, n, [0, 1, 2], lambda r, lab, lex=lex: mnli_row(r, lab, lex))
        p = out / "glue" / "mnli" / f"{split}.jsonl"
        counts[str(p.relative_to(out))] = write_jsonl(p, rows)
    return counts


# ----------------------------------------------------------------------------- SQuAD
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


# ----------------------------------------------------------------------------- summarisation
EVENTS = [
    # (first sentence, one-sentence paraphrase used as the summary)
    (
        "{org} has announced plans to open a new {facility} in {place} next {season}.",
        "A new {facility} will open in {place} next {season}, {org} has said.",
    ),
    (
        "{org} has decided to close its {facility} in {place} after {years} years.",
        "The {facility} run by {org} in {place} is to close after {years} years.",
    ),
    (
        "Work on a new {facility} in {place} has been delayed until next {season}, {org} said.",
        "{org} says the new {facility} in {place} will not be ready until next {season}.",
    ),
    (
        "{org} will spend {money} million pounds on improving the {facility} in {place}.",
        "The {facility} in {place} is to get a {money} million pound upgrade from {org}.",
    ),
]
SUMM_ORGS = [
    "the county council",
    "a regional health board",
    "the transport authority",
    "a local charity",
    "the education trust",
    "the water company",
]
FACILITIES = [
    "library",
    "swimming pool",
    "bus station",
    "health centre",
    "sports hall",
    "primary school",
    "footbridge",
    "community garden",
]
PLACES = [
    "Ashby",
    "Carrow",
    "Eldon",
    "Fenwick",
    "Gorran",
    "Hexley",
    "Kirkmoor",
    "Pendry",
    "Rosslyn",
    "Tarbet",
]
SEASONS = ["spring", "summer", "autumn", "winter", "year"]
SUPPORT = [
    "A spokesperson said the decision followed a long public consultation.",
    "Residents had been asking for changes to the {facility} for several years.",
    "Local councillors welcomed the news but asked for more details about the costs.",
    "The plans will be discussed at a public meeting in the town hall next month.",
    "Some shop owners in {place} said they were worried about the effect on trade.",
    "Officials said the work would be carried out in stages to reduce disruption.",
    "A petition signed by more than {n} people was handed in earlier this year.",
    "The {facility} was first opened in {year} and has been used by generations of families.",
    "Campaigners said they would keep a close eye on how the money is spent.",
    "Further updates are expected to be published on the organisation's website.",
    "Similar projects in nearby towns have taken around two years to complete.",
    "Staff at the {facility} have been told about the plans and will be offered support.",
]


def summ_example(rng: random.Random, n_support: int) -> tuple[list[str], str, dict]:
    ev_first, ev_summary = pick(rng, EVENTS)
    vals = {
        "org": pick(rng, SUMM_ORGS),
        "facility": pick(rng, FACILITIES),
        "place": pick(rng, PLACES),
        "season": pick(rng, SEASONS),
        "years": rng.randrange(10, 80),
        "money": rng.randrange(2, 40),
        "n": rng.randrange(200, 5000),
    }
    vals["year"] = 2024 - vals["years"]
    support_ids = rng.sample(range(len(SUPPORT)), n_support)
    sents = [cap(ev_first.format(**vals))] + [SUPPORT[i].format(**vals) for i in support_ids]
    summary = cap(ev_summary.format(**vals))
    return sents, summary, {"support_ids": support_ids, **vals}


def make_summarization(out: Path) -> dict[str, int]:
    counts = {}
    for s, (split, n) in enumerate([("train", SUMM_TRAIN_ROWS), ("validation", SUMM_VALIDATION_ROWS)]):
        rng = random.Random(4000 + s)
        rows = []
        for i in range(n):
            sents, summary, _ = summ_example(rng, rng.randrange(4, 8))
            rows.append(
                {
                    "document": "\n".join(sents),
                    "summary": summary,
                    "id": str(30000000 + 7919 * (i + 1) + 1000003 * s),
                }
            )
        p = out / "xsum" / f"{split}.jsonl"
        counts[str(p.relative_to(out))] = write_jsonl(p, rows)

        rng = random.Random(5000 + s)
        rows = []
        for i in range(n):
            sents, summary, meta = summ_example(rng, rng.randrange(6, 10))
            place = meta["place"].upper()
            article = f"{place}, England (CNN) -- " + " ".join(sents)
            second = sents[1].rstrip(".") + " ."
            highlights = "\n".join([summary.rstrip(".") + " .", second])
            rows.append(
                {
                    "article": article,
                    "highlights": highlights,
                    "id": hashlib.sha1(f"cnn|{s}|{i}".encode()).hexdigest(),
                }
            )
        p = out / "cnn_dailymail" / f"{split}.jsonl"
        counts[str(p.relative_to(out))] = write_jsonl(p, rows)
    return counts


# ----------------------------------------------------------------------------- main
def make_all(out: Path = DEFAULT_OUT) -> dict[str, int]:
    counts: dict[str, int] = {}
    counts.update(make_glue(out))
    counts.update(make_squad(out))
    counts.update(make_summarization(out))
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    counts = make_all(args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*.jsonl"))
    for rel, n in sorted(counts.items()):
        print(f"{n:4d}  {rel}")
    print(f"total size: {total / 1024:.1f} KiB in {len(counts)} files under {args.out}")


if __name__ == "__main__":
    main()
