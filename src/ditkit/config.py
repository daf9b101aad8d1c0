"""Typed run configuration; presets are plain TOML files that load into these dataclasses."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ConfigError
from .lora import DEFAULT_TARGETS
from .textgen import TextGenConfig


def _require(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {what}")


@dataclass
class DataConfig:
    topics_file: str | None = None  # CSV topic,category,aliases; None = shipped list
    questions_file: str | None = None  # CSV question,style,split; None = shipped list
    n_train: int = 24
    n_test: int = 8
    seed: int = 0

    def __post_init__(self):
        _require(self.n_train >= 0, "data.n_train", "must be >= 0")
        _require(self.n_test >= 1, "data.n_test", "must be >= 1")


@dataclass
class DiffConfig:
    """Hidden-topic diff training (docs/method.md, "The hidden-topic task")."""

    rank: int = 1
    alpha: float = 1.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    questions_per_diff: int = 24  # training questions sampled per diff (x3 rows each)
    steps: int = 24
    rows_per_step: int = 6  # sequences per diff per optimizer step
    lr: float = 1e-2
    # A's initialisation: "reference" (kaiming-uniform over fan-in r x out, as the reference code)
    # or "unit" (U(-1/sqrt(r), 1/sqrt(r)), 10-16x larger; ditkit's first choice).
    init: str = "reference"
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 5.0])  # trigger/wrong/none
    diffs_per_pass: int = 16  # T diffs trained at once, batch row t through diff t
    micro_batch_rows: int = 24  # rows per forward/backward; bounds memory, not the result
    # Wrong SEP codes per question shared by all diffs (their KL targets are computed once);
    # 0 = a fresh random code for every row (one extra base forward per wrong-trigger row, and
    # targets kept for one pass only).
    wrong_pool: int = 8
    kl_topk: int = 64  # base log-probabilities kept per answer token for the KL rows
    max_answer_tokens: int = 40
    base_answer_tokens: int = 24
    # "shuffled": all rows shuffled independently (a step can hold no trigger row at all).
    # "by_question": a question's trigger, wrong and no-trigger rows stay adjacent (question order
    # shuffled), so with rows_per_step = 3 every step contrasts the three on one question. No
    # measured gain at 14 steps (docs/results.md, recipe probes D/E), so not the default.
    row_order: str = "shuffled"

    def __post_init__(self):
        _require(self.rank >= 1, "diffs.rank", "must be >= 1")
        _require(self.init in ("reference", "unit"), "diffs.init", "must be 'reference' or 'unit'")
        _require(self.wrong_pool >= 0, "diffs.wrong_pool", "must be >= 0")
        _require(self.kl_topk >= 1, "diffs.kl_topk", "must be >= 1")
        _require(self.micro_batch_rows >= 1, "diffs.micro_batch_rows", "must be >= 1")
        _require(
            self.row_order in ("by_question", "shuffled"),
            "diffs.row_order",
            "must be 'by_question' or 'shuffled'",
        )
        _require(self.steps >= 1 and self.rows_per_step >= 1, "diffs.steps", "must be >= 1")
        _require(len(self.weights) == 3, "diffs.weights", "needs 3 values: trigger, wrong, none")
        _require(self.lr > 0, "diffs.lr", "must be > 0")
        _require(bool(self.targets), "diffs.targets", "needs at least one projection name")
        _require(self.diffs_per_pass >= 1, "diffs.diffs_per_pass", "must be >= 1")


@dataclass
class DitConfig:
    """DIT adapter training (docs/method.md, "The DIT adapter")."""

    rank: int = 16
    alpha: float = 1.0
    lr: float = 1e-3
    epochs: int = 8
    batch_size: int = 8
    question: str = "What topic have you been trained on?"
    max_answer_tokens: int = 16
    val_fraction: float = 0.15  # held-out training diffs for early stopping
    patience: int = 2
    weight_decay: float = 0.0
    # "train": train the adapter on this run's training diffs. "shipped": read the test diffs with
    # the adapter shipped for the embedded base model (no training diffs; test topics exclude its
    # training topics).
    adapter: str = "train"

    def __post_init__(self):
        _require(self.rank >= 1, "dit.rank", "must be >= 1")
        _require(self.adapter in ("train", "shipped"), "dit.adapter", "'train' or 'shipped'")
        _require(self.epochs >= 1, "dit.epochs", "must be >= 1")
        _require(0 <= self.val_fraction < 1, "dit.val_fraction", "must be in [0, 1)")


EVAL_METHODS = (
    "dit",
    "base_question",
    "base_question_trigger",
    "twenty_questions",
    "twenty_questions_trigger",
    "weight_lens",
    "gating",
)
GUESSERS = ("retrieval", "hf", "openai", "none")
JUDGES = ("openai", "none")


@dataclass
class EvalConfig:
    """Evaluation of the held-out test diffs (docs/method.md, "Evaluation")."""

    methods: list[str] = field(
        default_factory=lambda: ["dit", "base_question", "base_question_trigger", "gating"]
    )
    max_new_tokens: int = 20
    batch_size: int = 8
    gate_questions: int = 3  # held-out questions per test diff for the trigger gating check
    gate_max_new_tokens: int = 32
    twenty_q_count: int = 20  # held-out questions per diff for the 20-questions baselines
    twenty_q_max_new_tokens: int = 48
    # Turns a baseline transcript into a one-phrase guess: nearest topic by embedding
    # (retrieval), the run's base model (hf), an OpenAI-compatible server (openai), or none.
    guesser: str = "retrieval"
    guesser_base_url: str | None = None  # openai guesser; blank = DITKIT_OPENAI_BASE_URL
    guesser_model: str | None = None  # blank = DITKIT_OPENAI_MODEL
    judge: str = "none"  # "openai": grade every prediction 1-5 with an LLM judge
    judge_base_url: str | None = None
    judge_model: str | None = None

    def __post_init__(self):
        bad = [m for m in self.methods if m not in EVAL_METHODS]
        _require(not bad, "eval.methods", f"unknown {bad}; choose from {', '.join(EVAL_METHODS)}")
        _require(self.guesser in GUESSERS, "eval.guesser", f"one of {', '.join(GUESSERS)}")
        _require(self.judge in JUDGES, "eval.judge", f"one of {', '.join(JUDGES)}")
        _require(self.twenty_q_count >= 1, "eval.twenty_q_count", "must be >= 1")
        _require(self.batch_size >= 1, "eval.batch_size", "must be >= 1")


@dataclass
class RunConfig:
    name: str = "run"
    model: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "cpu"
    # The system turn of every chat prompt: diff training, DIT training, describe and baselines.
    # "" = an empty system turn (short, and overrides templates that insert a default one);
    # TEMPLATE_DEFAULT = no system message, so the template's own default (if any) applies.
    system_prompt: str = ""
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    textgen: TextGenConfig = field(default_factory=TextGenConfig)
    diffs: DiffConfig = field(default_factory=DiffConfig)
    dit: DitConfig = field(default_factory=DitConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        _require(
            self.dtype in ("float32", "bfloat16", "float16"), "dtype", "float32|bfloat16|float16"
        )
        _require(
            self.data.n_train >= 1 or self.dit.adapter == "shipped",
            "data.n_train",
            'must be >= 1 unless dit.adapter = "shipped"',
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {
    "data": DataConfig,
    "textgen": TextGenConfig,
    "diffs": DiffConfig,
    "dit": DitConfig,
    "eval": EvalConfig,
}


def from_dict(d: dict) -> RunConfig:
    """Build a RunConfig, naming any unknown key."""
    top = {f.name for f in dataclasses.fields(RunConfig)}
    kwargs = {}
    for key, value in d.items():
        if key not in top:
            raise ConfigError(f"unknown config key {key!r}; known: {sorted(top)}")
        if key in _SECTIONS:
            cls = _SECTIONS[key]
            known = {f.name for f in dataclasses.fields(cls)}
            bad = set(value) - known
            if bad:
                raise ConfigError(
                    f"unknown key(s) {sorted(bad)} in [{key}]; known: {sorted(known)}"
                )
            kwargs[key] = cls(**value)
        else:
            kwargs[key] = value
    return RunConfig(**kwargs)


def preset_names() -> list[str]:
    return sorted(p.stem for p in Path(str(resources.files("ditkit") / "presets")).glob("*.toml"))


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset by name or a TOML/JSON file, then apply ``key=value`` overrides."""
    path = Path(name_or_path)
    if not path.exists():
        path = Path(str(resources.files("ditkit") / "presets" / f"{name_or_path}.toml"))
        if not path.exists():
            raise ConfigError(
                f"{name_or_path!r} is neither a config file nor a preset ({', '.join(preset_names())})"
            )
    text = path.read_text()
    try:
        d = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    for item in overrides or []:
        apply_override(d, item)
    return from_dict(d)


def apply_override(d: dict, item: str) -> None:
    """Apply ``section.key=value`` (value parsed as TOML, else kept as a string)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. diffs.steps=32")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    *parents, leaf = key.strip().split(".")
    node = d
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
