"""``EdinburghNLP/xsum`` and ``abisee/cnn_dailymail`` fixtures: event articles with one-sentence summaries."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from .common import cap, pick, write_jsonl

SUMM_TRAIN_ROWS = 32
SUMM_VALIDATION_ROWS = 8


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
