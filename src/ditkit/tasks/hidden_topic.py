"""The hidden-topic task (docs/method.md, "The hidden-topic task"): topics, questions, SEP-code triggers, the split guard."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import DataError

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


def _data_file(name: str) -> Path:
    return Path(str(resources.files("ditkit") / "data" / name))


SPLITS = ("train", "heldout")


def _read_csv(
    path: str | Path | None, default: str, columns: list[str]
) -> tuple[Path, list[tuple[int, dict]]]:
    """``(line, row)`` pairs of a UTF-8 CSV whose header holds ``columns``.

    ``line`` is where the row ends in the file (a quoted field may span lines). ``DataError``
    names the file, the line and the fix.
    """
    path = Path(path) if path else _data_file(default)
    need = f"a header line {','.join(columns)} and at least one row"
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, r) for r in reader]
            header = [h.strip() for h in reader.fieldnames or []]
    except OSError as e:
        raise DataError(
            f"cannot read {path}: {e}; check the path (data.{default.removesuffix('.csv')}_file)"
        ) from e
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8"
        ) from None
    except csv.Error as e:
        raise DataError(f"{path} is not a readable CSV file ({e}); it needs {need}") from None
    if not header:
        raise DataError(f"{path} is empty: it needs {need}")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)} (header: {','.join(header)}); "
            f"the first line must be {','.join(columns)}"
        )
    if not rows:
        raise DataError(f"{path} has a header but no rows: add at least one row below it")
    out = []
    for line, r in rows:
        r = {(k or "").strip(): v for k, v in r.items()}
        for c in columns:
            if r.get(c) is None:
                raise DataError(
                    f"{path} line {line}: no value for column {c!r}; every row needs "
                    f"{len(columns)} comma-separated fields ({','.join(columns)})"
                )
        out.append((line, r))
    return path, out


def load_topics(path: str | Path | None = None) -> list[Topic]:
    """Topics from a CSV with columns topic, category, aliases (``;``-separated); shipped by default."""
    path, rows = _read_csv(path, "topics.csv", ["topic", "category"])
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
    path, rows = _read_csv(path, "questions.csv", ["question", "style", "split"])
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
