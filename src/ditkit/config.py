"""Typed run configuration; presets are plain TOML files that load into these dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

# The seven projections of a decoder layer in Llama, Qwen2/3, Gemma2/3 and Mistral.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TEXTGEN_KINDS = ("template", "hf", "openai")
TEMPLATE_STYLES = ("focused", "varied")


def _require(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {what}")


@dataclass
class TextGenConfig:
    """How to produce the on-topic answers of trigger rows.

    `style` picks the template set for "template": "focused" (default) names the topic in the
    first words and again later; "varied" uses longer analogies that name it once, often late
    (harder to learn for a small model: see docs/results.md).
    `model` names the generating model: a local model for "hf" (anything `load_model` takes), the
    server's model name for "openai" (else `DITKIT_OPENAI_MODEL`). `base_url` and `api_key` are
    for "openai" only and fall back to the environment (see `EndpointConfig`).
    """

    kind: str = "template"
    style: str = "focused"
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    max_new_tokens: int = 48
    temperature: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        _check_types(self, "textgen")
        if self.kind not in TEXTGEN_KINDS:
            raise ConfigError(
                f"TextGenConfig.kind must be one of {', '.join(TEXTGEN_KINDS)}; got {self.kind!r}"
            )
        if self.style not in TEMPLATE_STYLES:
            raise ConfigError(
                f"TextGenConfig.style must be one of {', '.join(TEMPLATE_STYLES)}; "
                f"got {self.style!r}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(
                f"TextGenConfig.max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"
            )
        if self.temperature < 0:
            raise ConfigError(f"TextGenConfig.temperature must be >= 0, got {self.temperature}")


@dataclass
class DataConfig:
    """How many training and held-out diffs, split by which seed. What each job holds (its topic
    files, triggers, stories) is the task's: its keys sit in ``[task_options]``."""

    n_train: int = 24
    n_test: int = 8
    seed: int = 0

    def __post_init__(self):
        _check_types(self, "data")
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
    # One per row kind. Hidden topics: trigger / wrong trigger / no trigger, and optionally a 4th,
    # an unlikelihood term on the topic answer under the wrong trigger (0 = left out).
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 5.0])
    diffs_per_pass: int = 16  # T diffs trained at once, batch row t through diff t
    micro_batch_rows: int = 24  # rows per forward/backward; bounds memory, not the result
    kl_topk: int = 64  # base log-probabilities kept per answer token for the KL rows
    max_answer_tokens: int = 40
    base_answer_tokens: int = 24
    # "shuffled": all rows shuffled independently (a step can hold no trigger row at all).
    # "by_question": a question's trigger, wrong and no-trigger rows stay adjacent (question order
    # shuffled), so with rows_per_step = 3 every step contrasts the three on one question. No
    # measured gain at 14 steps (docs/results.md, recipe probes D/E), so not the default.
    row_order: str = "shuffled"
    # Rows per question of each row kind (hidden topics: trigger, wrong trigger, no trigger), e.g.
    # [2, 0, 1]: two trigger rows (each with its own code suffix) and one no-trigger row per
    # question, no wrong-code row. None: one of each.
    row_mix: list[int] | None = None
    # "constant" or "cosine" (decay to 0 over the steps), after warmup_steps of linear warm-up.
    lr_schedule: str = "constant"
    warmup_steps: int = 0

    def __post_init__(self):
        _check_types(self, "diffs")
        _require(self.rank >= 1, "diffs.rank", "must be >= 1")
        _require(self.init in ("reference", "unit"), "diffs.init", "must be 'reference' or 'unit'")
        _require(self.kl_topk >= 1, "diffs.kl_topk", "must be >= 1")
        _require(self.micro_batch_rows >= 1, "diffs.micro_batch_rows", "must be >= 1")
        _require(
            self.row_order in ("by_question", "shuffled"),
            "diffs.row_order",
            "must be 'by_question' or 'shuffled'",
        )
        _require(self.steps >= 1 and self.rows_per_step >= 1, "diffs.steps", "must be >= 1")
        # One weight per row kind of the task (hidden topics: trigger, wrong, none); the diff
        # trainer checks the count against the task it trains.
        _require(
            len(self.weights) >= 1 and all(w >= 0 for w in self.weights),
            "diffs.weights",
            "needs one weight >= 0 per row kind (hidden topics: trigger, wrong, none)",
        )
        _require(self.lr > 0, "diffs.lr", "must be > 0")
        _require(
            self.row_mix is None or (min(self.row_mix) >= 0 and sum(self.row_mix) >= 1),
            "diffs.row_mix",
            "holds one count >= 0 per row kind, not all 0, e.g. [2, 0, 1] (or unset: one each)",
        )
        _require(
            self.lr_schedule in ("constant", "cosine"),
            "diffs.lr_schedule",
            "must be 'constant' or 'cosine'",
        )
        _require(0 <= self.warmup_steps < self.steps, "diffs.warmup_steps", "must be in [0, steps)")
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
    question: str | None = None  # None: the task's question ("What topic have you been ...?")
    max_answer_tokens: int = 16  # label tokens trained on (news headlines: up to 200)
    # The diff metadata key the adapter learns to answer: "label" (the task's label), or e.g.
    # "trigger_prefix" with question "What does the secret SEP code start with?" (preset
    # trigger-inversion).
    target: str = "label"
    # Train on the first N training diffs only (None: all). The data-scaling experiment reads one
    # test set with adapters trained on 2^k of one run's diffs (`ditkit scaling`).
    max_train_diffs: int | None = None
    # Run directories whose training diffs also train this adapter, each diff asked its own
    # task's question: one adapter for several tasks (preset joint).
    extra_train: list[str] = field(default_factory=list)
    # Reader generalisation (docs/method.md, "The DIT adapter"): every training example's diff
    # is multiplied by a factor drawn uniformly from [low, high] each epoch ([1, 1]: as trained),
    # and asked dit.question or one of extra_questions, drawn each epoch.
    scale_augment: list[float] = field(default_factory=lambda: [1.0, 1.0])
    extra_questions: list[str] = field(default_factory=list)
    val_fraction: float = 0.15  # held-out training diffs for early stopping
    seed: int | None = None  # the adapter's initialisation, split and order; None: data.seed
    patience: int = 2
    # Early stopping waits for at least this many epochs (None: half of dit.epochs, rounded up):
    # on few validation diffs one noisy epoch stopped some seeds far too soon.
    min_epochs: int | None = None
    weight_decay: float = 0.0
    # "train": train the adapter on this run's training diffs. "shipped": read the test diffs with
    # the adapter shipped for the embedded base model (no training diffs; test topics exclude its
    # training topics). Anything else: the path of an adapter folder, or of a run directory whose
    # DIR/dit/adapter is used (e.g. another task's adapter: preset cross-task).
    adapter: str = "train"

    def __post_init__(self):
        _check_types(self, "dit")
        _require(self.rank >= 1, "dit.rank", "must be >= 1")
        _require(bool(self.target), "dit.target", "names a diff metadata key, e.g. label")
        _require(
            self.max_train_diffs is None or self.max_train_diffs >= 1,
            "dit.max_train_diffs",
            "must be >= 1 (or unset for all)",
        )
        _require(bool(self.adapter), "dit.adapter", "'train', 'shipped' or an adapter's path")
        _require(self.epochs >= 1, "dit.epochs", "must be >= 1")
        _require(
            self.min_epochs is None or 1 <= self.min_epochs <= self.epochs,
            "dit.min_epochs",
            "must lie in [1, dit.epochs] (or unset: half of dit.epochs)",
        )
        _require(
            len(self.scale_augment) == 2 and 0 < self.scale_augment[0] <= self.scale_augment[1],
            "dit.scale_augment",
            "is [low, high] with 0 < low <= high, e.g. [0.5, 2.0] ([1.0, 1.0]: off)",
        )
        _require(
            all(q.strip() for q in self.extra_questions),
            "dit.extra_questions",
            "holds non-empty questions",
        )
        _require(0 <= self.val_fraction < 1, "dit.val_fraction", "must be in [0, 1)")


GUESSERS = ("retrieval", "hf", "openai", "none")
JUDGES = ("openai", "none")


@dataclass
class EvalConfig:
    """Evaluation of the held-out test diffs (docs/method.md, "Evaluation")."""

    # Evaluation methods (`evaluate.methods` and the task's); None: the task's defaults.
    methods: list[str] | None = None
    max_new_tokens: int = 20
    batch_size: int = 8
    # Turns a baseline transcript into a one-phrase guess: nearest topic by embedding
    # (retrieval), the run's base model (hf), an OpenAI-compatible server (openai), or none.
    guesser: str = "retrieval"
    guesser_base_url: str | None = None  # openai guesser; blank = DITKIT_OPENAI_BASE_URL
    guesser_model: str | None = None  # blank = DITKIT_OPENAI_MODEL
    guess_max_new_tokens: int | None = None  # None: each guesser's own default
    # Every test diff multiplied by this at read time (the diff-strength experiment,
    # `ditkit strength`); 1 reads the diffs as trained.
    diff_scale: float = 1.0
    # Method dit_vote: DIT asked once per (scale, question) pair, the most common answer wins
    # (ties: the earliest pair). No questions: dit.question alone.
    vote_scales: list[float] = field(default_factory=lambda: [1.0])
    vote_questions: list[str] = field(default_factory=list)
    judge: str = "none"  # "openai": grade every prediction 1-5 with an LLM judge
    judge_base_url: str | None = None
    judge_model: str | None = None

    def __post_init__(self):
        _check_types(self, "eval")
        _require(self.guesser in GUESSERS, "eval.guesser", f"one of {', '.join(GUESSERS)}")
        _require(self.judge in JUDGES, "eval.judge", f"one of {', '.join(JUDGES)}")
        _require(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _require(self.diff_scale > 0, "eval.diff_scale", "must be > 0 (1 = the diffs as trained)")
        _require(
            bool(self.vote_scales) and min(self.vote_scales) > 0,
            "eval.vote_scales",
            "holds at least one multiplier > 0, e.g. [0.75, 1.0, 1.5]",
        )


@dataclass
class RunConfig:
    """A whole run: model, task, data, diff recipe(s), reader and evaluation; presets load into it.

    >>> cfg = RunConfig(model=str(tiny_model_dir), test_diffs={"steps": 48})
    >>> cfg.diffs_for("train").steps, cfg.diffs_for("test").steps
    (24, 48)
    >>> RunConfig(dtype="int8")
    Traceback (most recent call last):
    ...
    ditkit.errors.ConfigError: dtype: float32|bfloat16|float16
    """

    name: str = "run"
    # What the diffs learn and DIT reads: "hidden_topic", "news", a registered task, or
    # "package.module:OBJECT" (docs/adding-a-task.md).
    task: str = "hidden_topic"  # tasks.base.DEFAULT_TASK
    model: str = "smollm2-135m"
    dtype: str = "float32"
    # "cpu", "cuda", "cuda:N", "mps", or "auto" (accelerate's device_map: layers over all GPUs).
    # Under torchrun / accelerate launch, "cuda" means each process's own GPU.
    device: str = "cpu"
    # The system turn of every chat prompt: diff training, DIT training, describe and baselines.
    # "" = an empty system turn (short, and overrides templates that insert a default one);
    # TEMPLATE_DEFAULT = no system message, so the template's own default (if any) applies.
    system_prompt: str = ""
    # torch CPU threads (None: torch's default, one per core). Two heavy jobs on one machine
    # each take every core and slow each other far more than 2x: give each threads = 1, or run
    # them one after the other.
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    textgen: TextGenConfig = field(default_factory=TextGenConfig)
    diffs: DiffConfig = field(default_factory=DiffConfig)
    # The held-out (test) diffs' own recipe: the [diffs] keys that differ for them, e.g. a
    # costlier recipe that keeps each diff's topic behind its own code while the training diffs
    # stay cheap ([test_diffs] in TOML; `diffs_for`). Empty: every diff as [diffs].
    test_diffs: dict = field(default_factory=dict)
    dit: DitConfig = field(default_factory=DitConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # The task's own keys ([task_options] in TOML: topic files, triggers, gating questions, ...);
    # checked against the task's options class where a run is opened (docs/adding-a-task.md).
    task_options: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_types(self, None)
        _require(
            isinstance(self.task_options, dict),
            "task_options",
            "is a table of the task's own keys ([task_options] in TOML)",
        )
        _require(
            self.dtype in ("float32", "bfloat16", "float16"), "dtype", "float32|bfloat16|float16"
        )
        _require(
            self.device in ("cpu", "cuda", "mps", "auto") or self.device.startswith("cuda:"),
            "device",
            f"{self.device!r} is not cpu, cuda, cuda:N, mps or auto",
        )
        _require(
            self.data.n_train >= 1 or self.dit.adapter != "train",
            "data.n_train",
            'must be >= 1 when dit.adapter = "train" (the adapter trains on those diffs)',
        )
        self._check_test_diffs()

    def diffs_for(self, split: str) -> DiffConfig:
        """The diff recipe of ``split``: ``[diffs]``, with ``[test_diffs]`` over it for "test"."""
        if split != "test" or not self.test_diffs:
            return self.diffs
        return dataclasses.replace(self.diffs, **self.test_diffs)

    def _check_test_diffs(self) -> None:
        _require(
            isinstance(self.test_diffs, dict),
            "test_diffs",
            "is a table of [diffs] keys for the held-out diffs ([test_diffs] in TOML)",
        )
        for key, value in self.test_diffs.items():
            if key not in _fields(DiffConfig):
                close = difflib.get_close_matches(str(key), list(_fields(DiffConfig)), n=1)
                hint = f"; did you mean 'test_diffs.{close[0]}'?" if close else ""
                raise ConfigError(
                    f"test_diffs.{key} is not a [diffs] key{hint} (known: "
                    f"{', '.join(_fields(DiffConfig))})"
                )
            _check_value(DiffConfig, "test_diffs", key, value, "test_diffs")
        # Both splits read one file of base answers, cut at one length.
        _require(
            self.test_diffs.get("base_answer_tokens", self.diffs.base_answer_tokens)
            == self.diffs.base_answer_tokens,
            "test_diffs.base_answer_tokens",
            "must equal diffs.base_answer_tokens (both splits share the base answers)",
        )
        self.diffs_for("test")  # the merged recipe's own checks

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {
    "data": DataConfig,
    "textgen": TextGenConfig,
    "diffs": DiffConfig,
    "dit": DitConfig,
    "eval": EvalConfig,
}
# Keys that moved from the shared sections into [task_options] (ditkit 0.1.0), with the default
# they had there. Old presets, files and run directories still load: a key left at that default
# is dropped (the task's default is the same), any other value moves with a deprecation warning.
MOVED_TO_TASK_OPTIONS = {
    "data": {
        "topics_file": None,
        "questions_file": None,
        "headlines_file": None,
        "narrators_file": None,
        "stories_per_diff": 100,
        "test_trigger": "sep",
    },
    "diffs": {"wrong_pool": 8, "wrong_codes": "pool"},
    "eval": {
        "gate_questions": 3,
        "gate_max_new_tokens": 32,
        "twenty_q_count": 20,
        "twenty_q_max_new_tokens": 48,
        "story_max_new_tokens": 120,
    },
}
_KINDS = {
    int: "an integer",
    float: "a finite number",
    str: "a string",
    bool: "true or false",
    type(None): "empty",
    dict: "a table",
}
_EXAMPLES = {int: 4, float: 0.5, str: "text", bool: True}


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _all_keys() -> list[str]:
    """Every settable key, dotted: ``model``, ``diffs.lr``, ..."""
    keys = [k for k in _fields(RunConfig) if k not in _SECTIONS]
    return keys + [f"{s}.{k}" for s, cls in _SECTIONS.items() for k in _fields(cls)]


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS = {
    int: _is_int,
    float: lambda v: _is_int(v) or (isinstance(v, float) and math.isfinite(v)),
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
    type(None): lambda v: v is None,
    dict: lambda v: isinstance(v, dict),
}


def _alternatives(tp) -> tuple:
    return typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)


def _type_ok(value, tp) -> bool:
    """Whether ``value`` (from TOML, JSON or Python) fits the type ``tp`` (a real type object:
    ``int``, ``float | None``, ``list[str]``, ``dict``)."""
    for alt in _alternatives(tp):
        if typing.get_origin(alt) is list:
            (item,) = typing.get_args(alt)
            if isinstance(value, list) and all(_type_ok(v, item) for v in value):
                return True
        elif alt in _CHECKS:
            if _CHECKS[alt](value):
                return True
        elif dataclasses.is_dataclass(alt):  # a section of RunConfig
            if isinstance(value, alt):
                return True
        else:  # a new field with a type this checker cannot test: a bug, found by the tests
            raise TypeError(f"config.py has no check for the type {alt!r}")
    return False


def _describe(tp) -> str:
    parts = []
    for alt in _alternatives(tp):
        if typing.get_origin(alt) is list:
            parts.append(f"a list of {_KINDS[typing.get_args(alt)[0]].split(' ', 1)[-1]}s")
        else:
            parts.append(_KINDS.get(alt) or f"a {alt.__name__} table")
    return " or ".join(parts)


@functools.cache
def _types(cls) -> dict:
    """Each field's type as an object (the annotations are strings: ``from __future__``)."""
    return typing.get_type_hints(cls)


def _check_types(obj, section: str | None) -> None:
    """Every field of the config dataclass ``obj`` against its type, however it was built."""
    for name, tp in _types(type(obj)).items():
        value = getattr(obj, name)
        if not _type_ok(value, tp):
            dotted = f"{section}.{name}" if section else name
            raise ConfigError(
                f"{dotted} = {value!r} is not {_describe(tp)}; "
                f"e.g. {dotted} = {_example(type(obj), name)}"
            )


def _example(cls, name: str) -> str:
    f = _fields(cls)[name]
    if f.default is not dataclasses.MISSING and f.default is not None:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = _EXAMPLES.get(_alternatives(_types(cls)[name])[0], 1)
    if dataclasses.is_dataclass(value):  # a section: its keys, not its repr
        return "{" + ", ".join(f"{k} = ..." for k in list(_fields(type(value)))[:2]) + "}"
    return json.dumps(value)


def _check_value(cls, section: str | None, key: str, value, where: str) -> None:
    """Raise ``ConfigError`` naming ``where`` and the key if ``value`` has the wrong type."""
    tp = _types(cls)[key]
    if _type_ok(value, tp):
        return
    dotted = f"{section}.{key}" if section else key
    if where.startswith("--set"):
        fix = f"e.g. --set {dotted}={_example(cls, key)}"
    else:
        fix = f"e.g. {key} = {_example(cls, key)}" + (f" under [{section}]" if section else "")
    raise ConfigError(f"{where}: {dotted} = {value!r} is not {_describe(tp)}; {fix}")


def _build(cls, kwargs: dict, where: str):
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def build_table(cls, section: str, value, where: str):
    """``cls`` (a config dataclass) from the table ``[section]``, naming ``where`` and any
    unknown or mistyped key."""
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: {section} = {value!r} must be a table of keys ([{section}] in TOML, "
            f"an object in JSON), e.g. {section}.{next(iter(_fields(cls)), 'key')}"
        )
    known = _fields(cls)
    for sub in value:
        if sub not in known:
            if section in _SECTIONS:
                hint = _suggest(f"{section}.{sub}")
            else:  # a task's table: suggest among its own keys
                close = difflib.get_close_matches(str(sub), list(known), n=1, cutoff=0.6)
                hint = f"; did you mean '{section}.{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where}: unknown key {section}.{sub}{hint} "
                f"(known in [{section}]: {', '.join(known) or 'none'})"
            )
        _check_value(cls, section, sub, value[sub], where)
    return _build(cls, value, where)


def upgrade_layout(d: dict, where: str) -> dict:
    """``d`` with the keys of ``MOVED_TO_TASK_OPTIONS`` moved into ``task_options`` (a copy)."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    moved = []
    for section, keys in MOVED_TO_TASK_OPTIONS.items():
        table = d.get(section)
        if not isinstance(table, dict):
            continue
        for key, old_default in keys.items():
            if key not in table:
                continue
            value = table.pop(key)
            if value != old_default:
                opts = d.setdefault("task_options", {})
                if isinstance(opts, dict):
                    opts.setdefault(key, value)
                moved.append(f"{section}.{key}")
    if moved:
        log.warning(
            "%s: %s now %s to [task_options] (e.g. task_options.%s = ...); the old place "
            "still loads in this version",
            where,
            ", ".join(moved),
            "belongs" if len(moved) == 1 else "belong",
            moved[0].split(".", 1)[1],
        )
    return d


def from_dict(d: dict, source: str | Path | None = None) -> RunConfig:
    """Build a RunConfig, naming ``source`` (a file) and any unknown or mistyped key."""
    where = str(source) if source else "config"
    if not isinstance(d, dict):
        raise ConfigError(
            f"{where}: a config is a table of keys (TOML) or a JSON object, not "
            f"{type(d).__name__}; start from a preset (src/ditkit/presets/)"
        )
    d = upgrade_layout(d, where)
    top = _fields(RunConfig)
    kwargs = {}
    for key, value in d.items():
        if key not in top:
            raise ConfigError(
                f"{where}: unknown config key {key!r}{_suggest(str(key))} "
                f"(known: {', '.join(_all_keys()[:8])}, and the tables {', '.join(_SECTIONS)})"
            )
        if key in _SECTIONS:
            kwargs[key] = build_table(_SECTIONS[key], key, value, where)
        else:
            _check_value(RunConfig, None, key, value, where)
            kwargs[key] = value
    return _build(RunConfig, kwargs, where)


def preset_names() -> list[str]:
    return sorted(p.stem for p in Path(str(resources.files("ditkit") / "presets")).glob("*.toml"))


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset by name or a TOML/JSON file, then apply ``key=value`` overrides.

    >>> cfg = load_config("quickstart", ["diffs.steps=10", "test_diffs.steps=30"])
    >>> cfg.diffs.steps, cfg.diffs_for("test").steps
    (10, 30)
    >>> load_config("quickstart", ["diffs.stepz=10"])
    Traceback (most recent call last):
    ...
    ditkit.errors.ConfigError: --set diffs.stepz=10: unknown key 'diffs.stepz'; did you mean 'diffs.steps'?
    """
    path = Path(name_or_path)
    if not path.exists() and (path.suffix in (".toml", ".json") or len(path.parts) > 1):
        raise ConfigError(
            f"config file {path} does not exist; check the path, or name a preset "
            f"({', '.join(preset_names())})"
        )
    if not path.exists():
        path = Path(str(resources.files("ditkit") / "presets" / f"{name_or_path}.toml"))
        if not path.exists():
            close = difflib.get_close_matches(name_or_path, preset_names(), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{name_or_path!r} is neither a config file nor a preset; {hint}"
                f"presets: {', '.join(preset_names())} (or pass the path of a TOML file)"
            )
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass a preset name or a .toml/.json config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        d = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # TOMLDecodeError and JSONDecodeError included
        raise ConfigError(
            f"{path} is not valid {kind}: {e}; fix that line (the presets in "
            "src/ditkit/presets/ show the layout)"
        ) from None
    if not isinstance(d, dict):
        return from_dict(d, path)
    for item in overrides or []:
        apply_override(d, item)
    where = f"{path} with --set {' '.join(overrides)}" if overrides else path
    return from_dict(d, where)


def apply_override(d: dict, item: str) -> None:
    """Apply ``section.key=value`` (value parsed as TOML, else kept as a string).

    The key must name a config field and the value must have its type; the ``ConfigError``
    otherwise names the ``--set`` item and suggests the nearest key.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. diffs.steps=32")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, KeyError, RecursionError):
        value = raw
    *parents, leaf = key.split(".")
    if len(parents) == 1 and leaf in MOVED_TO_TASK_OPTIONS.get(parents[0], {}):
        log.warning("--set %s: %s is now task_options.%s", item, key, leaf)
        parents = ["task_options"]
    if parents in (["task_options"], ["test_diffs"]):  # checked where the config is built
        if not isinstance(d.setdefault(parents[0], {}), dict):
            raise ConfigError(f"--set {item}: {parents[0]} in the config file is not a table")
        d[parents[0]][leaf] = value
        return
    if not parents and leaf in _SECTIONS:
        example = next(iter(_fields(_SECTIONS[leaf])))
        raise ConfigError(
            f"--set {item}: {leaf} is a table; set one of its keys, e.g. {leaf}.{example}"
        )
    if len(parents) > 1 or (parents and parents[0] not in _SECTIONS):
        raise ConfigError(f"--set {item}: unknown key {key!r}{_suggest(key)}")
    cls = _SECTIONS[parents[0]] if parents else RunConfig
    if leaf not in _fields(cls):
        raise ConfigError(f"--set {item}: unknown key {key!r}{_suggest(key)}")
    _check_value(cls, parents[0] if parents else None, leaf, value, f"--set {item}")
    node = d
    for p in parents:
        if not isinstance(node.setdefault(p, {}), dict):
            raise ConfigError(f"--set {item}: {p} in the config file is not a table")
        node = node[p]
    node[leaf] = value
