"""``nyu-mll/glue`` fixtures: ``glue/<task>/{train,validation}.jsonl`` (MNLI: matched / mismatched)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from .common import balanced_labels, cap, pick, write_jsonl
from .glue_lexicon import (
    ACTIONS,
    ANIMALS,
    ANNOUNCEMENTS,
    COMPANIES,
    DAYS,
    HOWTO,
    INTENS,
    METRICS,
    MNLI_MATCHED,
    MNLI_MISMATCHED,
    MOVIE_NOUNS,
    NAMES,
    NEG_ADJ,
    NEUTRAL_TAILS,
    OBJECTS,
    ORGS,
    PEOPLE,
    PLUR_SUBJ,
    POS_ADJ,
    QUARTERS,
    ROLES,
    SING_SUBJ,
    STS_OBJECTS,
    VERBS,
)

GLUE_TRAIN_ROWS = 48
GLUE_VALIDATION_ROWS = 16


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
