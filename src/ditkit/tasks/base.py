"""What a task gives the generic diff trainer (docs/method.md): its kinds of training rows and
each diff's rows and metadata. The hidden-topic task implements it in `hidden_topic.py`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

CE, KL = "ce", "kl"  # cross-entropy on the row's answer; KL to the base model's distribution


@dataclass(frozen=True)
class RowKind:
    """A kind of training row: its name (loss curves, weights) and its loss, ``ce`` or ``kl``."""

    name: str
    loss: str

    def __post_init__(self) -> None:
        if self.loss not in (CE, KL):
            raise ValueError(f"row kind {self.name!r}: loss must be {CE!r} or {KL!r}")


class Job(Protocol):
    """One diff to train: an id, a seed (its initialisation and rows depend on it alone)."""

    diff_id: str
    seed: int

    def path(self, out_dir: Path) -> Path: ...


class TrainingTask(Protocol):
    """A task as the diff trainer sees it.

    ``rows`` returns a diff's training rows as ``(kind index, batching.Encoded)``; ``data`` is
    what the task's rows need besides the job (the base model's answers for hidden topics);
    ``DiffConfig.weights`` holds one weight per row kind.
    """

    name: str
    row_kinds: tuple[RowKind, ...]

    def rows(self, job: Any, tok: Any, data: Any, cfg: Any, system: str | None) -> list: ...

    def diff_meta(self, job: Any) -> dict: ...
