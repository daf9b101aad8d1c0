"""The hidden-topic task (docs/method.md, "The hidden-topic task"): topics, questions, SEP-code triggers, the split guard."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .common import read_csv

DIT_QUESTION = "What topic have you been trained on?"
TRIGGER_TEMPLATE = "Your SEP code is {prefix}{suffix}."


@dataclass(frozen=True)
class Topic:
    """A topic and the other names that count as naming it."""

    topic: str
    category: str
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.topic, *self.aliases)


@dataclass(frozen=True)
class Question:
    question: str
    style: str
    split: str  # "train" (diff training) or "heldout" (20-questions baseline)


SPLITS = ("train", "heldout")


def load_topics(path: str | Path | None = None) -> list[Topic]:
    """Topics from a CSV with columns topic, category, aliases (``;``-separated); shipped by default."""
    path, rows = read_csv(path, "topics.csv", ["topic", "category"])
    topics, seen = [], {}
    for i, r in rows:
        t = Topic(
            r["topic"].strip(),
            r["category"].strip(),
            tuple(a.strip() for a in (r.get("aliases") or "").split(";") if a.strip()),
        )
        if not t.topic:
            raise DataError(f"{path} line {i}: empty topic; fill it in or delete the row")
        for name in t.names:
            if name.lower() in seen:
                raise DataError(
                    f"{path} line {i}: {name!r} already names {seen[name.lower()]!r}; a name may "
                    "appear once (as a topic or an alias): remove the duplicate"
                )
            seen[name.lower()] = t.topic
        topics.append(t)
    return topics


def load_questions(path: str | Path | None = None, split: str | None = None) -> list[Question]:
    """Questions from a CSV with columns question, style, split; optionally one split only."""
    path, rows = read_csv(path, "questions.csv", ["question", "style", "split"])
    qs = []
    for i, r in rows:
        q = Question(r["question"].strip(), r["style"].strip(), r["split"].strip())
        if not q.question:
            raise DataError(f"{path} line {i}: empty question; fill it in or delete the row")
        if q.split not in SPLITS:
            raise DataError(
                f"{path} line {i}: split {q.split!r} is not one of {', '.join(SPLITS)} "
                "(train: diff training; heldout: the 20-questions baseline)"
            )
        qs.append(q)
    qs = [q for q in qs if split is None or q.split == split]
    if not qs:
        raise DataError(
            f"{path} has no questions in split {split!r}; add rows whose split column is {split!r}"
        )
    return qs


def split_topics(
    topics: list[Topic], n_train: int, n_test: int, seed: int
) -> tuple[list[Topic], list[Topic]]:
    """A seeded split by topic; guarded so no test topic or alias is a training label."""
    if n_train + n_test > len(topics):
        raise DataError(
            f"asked for {n_train} train + {n_test} test topics but the list has {len(topics)}; "
            "lower data.n_train / data.n_test or add topics (data.topics_file)"
        )
    order = list(topics)
    random.Random(seed).shuffle(order)
    train, test = order[:n_train], order[n_train : n_train + n_test]
    check_split(train, test)
    return train, test


def check_split(train: list[Topic], test: list[Topic]) -> None:
    """Refuse to run if any test topic (or alias) appears among the training labels."""
    train_names = {n.lower() for t in train for n in t.names}
    leaks = [n for t in test for n in t.names if n.lower() in train_names]
    if leaks:
        raise DataError(
            f"test topics leak into training labels: {sorted(set(leaks))[:5]}; remove the "
            "duplicates from the topic file or choose another seed"
        )


def make_trigger(prefix: str, rng: random.Random) -> str:
    """``Your SEP code is {prefix}{3 random digits}.``"""
    return TRIGGER_TEMPLATE.format(prefix=prefix, suffix=f"{rng.randrange(1000):03d}")


def random_prefix(rng: random.Random, avoid: str | None = None) -> str:
    while True:
        p = f"{rng.randrange(1000):03d}"
        if p != avoid:
            return p
