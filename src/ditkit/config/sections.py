"""The config sections (typed dataclasses with defaults and validation) and `RunConfig`, which
holds one of each; presets are plain TOML files that load into them (`config.files`)."""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from .checks import check_types, check_value, fields_of, require

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TEXTGEN_KINDS = ("template", "hf", "openai")
TEMPLATE_STYLES = ("focused", "varied")


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
        check_types(self, "textgen")
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
        check_types(self, "data")
        require(self.n_train >= 0, "data.n_train", "must be >= 0")
        require(self.n_test >= 1, "data.n_test", "must be >= 1")


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
    # B's initialisation (A starts at zero): "reference" (kaiming-uniform over fan-in r x out, as
    # the reference code) or "unit" (U(-1/sqrt(r), 1/sqrt(r)), 10-16x larger; ditkit's first
    # choice).
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
        check_types(self, "diffs")
        require(self.rank >= 1, "diffs.rank", "must be >= 1")
        require(self.init in ("reference", "unit"), "diffs.init", "must be 'reference' or 'unit'")
        require(self.kl_topk >= 1, "diffs.kl_topk", "must be >= 1")
        require(self.micro_batch_rows >= 1, "diffs.micro_batch_rows", "must be >= 1")
        require(
            self.row_order in ("by_question", "shuffled"),
            "diffs.row_order",
            "must be 'by_question' or 'shuffled'",
        )
        require(self.steps >= 1 and self.rows_per_step >= 1, "diffs.steps", "must be >= 1")
        # One weight per row kind of the task (hidden topics: trigger, wrong, none); the diff
        # trainer checks the count against the task it trains.
        require(
            len(self.weights) >= 1 and all(w >= 0 for w in self.weights),
            "diffs.weights",
            "needs one weight >= 0 per row kind (hidden topics: trigger, wrong, none)",
        )
        require(self.lr > 0, "diffs.lr", "must be > 0")
        require(
            self.row_mix is None or (min(self.row_mix) >= 0 and sum(self.row_mix) >= 1),
            "diffs.row_mix",
            "holds one count >= 0 per row kind, not all 0, e.g. [2, 0, 1] (or unset: one each)",
        )
        require(
            self.lr_schedule in ("constant", "cosine"),
            "diffs.lr_schedule",
            "must be 'constant' or 'cosine'",
        )
        require(0 <= self.warmup_steps < self.steps, "diffs.warmup_steps", "must be in [0, steps)")
        require(bool(self.targets), "diffs.targets", "needs at least one projection name")
        require(self.diffs_per_pass >= 1, "diffs.diffs_per_pass", "must be >= 1")


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
    # Train on the first N training diffs only (None: all); only those need be on disk, so a
    # reader can train while a population's later diffs are still being built. The data-scaling
    # experiment reads one test set with adapters trained on 2^k of one run's diffs.
    max_train_diffs: int | None = None
    # Behaviour suite: train on the training diffs of these families only (empty: every one),
    # before max_train_diffs: the transfer matrix and the diversity curve (docs/behaviours.md).
    train_families: list[str] = field(default_factory=list)
    # Run directories whose training diffs also train this adapter, each diff asked its own
    # task's question: one adapter for several tasks (preset joint).
    extra_train: list[str] = field(default_factory=list)
    # Reader generalisation (docs/method.md, "The DIT adapter"): every training example's diff
    # is multiplied by a factor drawn uniformly from [low, high] each epoch ([1, 1]: as trained),
    # and asked dit.question or one of extra_questions, drawn each epoch.
    scale_augment: list[float] = field(default_factory=lambda: [1.0, 1.0])
    extra_questions: list[str] = field(default_factory=list)
    # Preference stage (docs/method.md, "The DIT adapter"): > 0 adds, per training example, an
    # odds-ratio term (ORPO) ranking the diff's own label above another training diff's label
    # (a wrong description: another family, another content, or "nothing" for a benign diff).
    # Each step then runs a second forward pass on the wrong labels. 0: cross-entropy only.
    preference_weight: float = 0.0
    val_fraction: float = 0.15  # held-out training diffs for early stopping
    seed: int | None = None  # the adapter's initialisation, split and order; None: data.seed
    patience: int = 2
    # Early stopping waits for at least this many epochs (None: half of dit.epochs, rounded up):
    # on few validation diffs one noisy epoch stopped some seeds far too soon.
    min_epochs: int | None = None
    weight_decay: float = 0.0
    # "train": train the adapter on this run's training diffs. "shipped": read the test diffs with
    # the adapter shipped for the embedded base model and the run's task (no training diffs; test
    # topics exclude its training topics); "shipped:TASK": the one shipped for TASK. Anything else: the path of an adapter folder, or of a run directory whose
    # DIR/dit/adapter is used (e.g. another task's adapter: preset cross-task).
    adapter: str = "train"

    def __post_init__(self):
        check_types(self, "dit")
        require(self.rank >= 1, "dit.rank", "must be >= 1")
        require(bool(self.target), "dit.target", "names a diff metadata key, e.g. label")
        require(
            self.max_train_diffs is None or self.max_train_diffs >= 1,
            "dit.max_train_diffs",
            "must be >= 1 (or unset for all)",
        )
        require(bool(self.adapter), "dit.adapter", "'train', 'shipped' or an adapter's path")
        require(self.epochs >= 1, "dit.epochs", "must be >= 1")
        require(
            self.min_epochs is None or 1 <= self.min_epochs <= self.epochs,
            "dit.min_epochs",
            "must lie in [1, dit.epochs] (or unset: half of dit.epochs)",
        )
        require(
            len(self.scale_augment) == 2 and 0 < self.scale_augment[0] <= self.scale_augment[1],
            "dit.scale_augment",
            "is [low, high] with 0 < low <= high, e.g. [0.5, 2.0] ([1.0, 1.0]: off)",
        )
        require(
            all(q.strip() for q in self.extra_questions),
            "dit.extra_questions",
            "holds non-empty questions",
        )
        require(0 <= self.val_fraction < 1, "dit.val_fraction", "must be in [0, 1)")
        require(
            self.preference_weight >= 0,
            "dit.preference_weight",
            "must be >= 0 (0: off; ORPO's own default is 0.1)",
        )


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
    # DIT's rows (dit and other adapter methods; not dit_vote, which has vote_scales) read each
    # test diff times this on top of diff_scale. None: the reader's recorded read_scale (a
    # shipped reader's ditkit.json; 1 for a reader the run trained).
    dit_scale: float | None = None
    # Read only the first N held-out diffs (None: all): a population still building its held-out
    # set can be read now; a larger N later generates only the rows still missing.
    max_test_diffs: int | None = None
    # Method dit_vote: DIT asked once per (scale, question) pair, the most common answer wins
    # (ties: the earliest pair). No questions: dit.question alone.
    vote_scales: list[float] = field(default_factory=lambda: [1.0])
    vote_questions: list[str] = field(default_factory=list)
    judge: str = "none"  # "openai": grade every prediction 1-5 with an LLM judge
    judge_base_url: str | None = None
    judge_model: str | None = None

    def __post_init__(self):
        check_types(self, "eval")
        require(self.guesser in GUESSERS, "eval.guesser", f"one of {', '.join(GUESSERS)}")
        require(self.judge in JUDGES, "eval.judge", f"one of {', '.join(JUDGES)}")
        require(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        require(self.diff_scale > 0, "eval.diff_scale", "must be > 0 (1 = the diffs as trained)")
        require(
            self.dit_scale is None or self.dit_scale > 0,
            "eval.dit_scale",
            "must be > 0 (or unset: the reader's recorded read_scale)",
        )
        require(
            self.max_test_diffs is None or self.max_test_diffs >= 1,
            "eval.max_test_diffs",
            "must be >= 1 (or unset: every held-out diff)",
        )
        require(
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
    # Which diff folders the diffs stage builds, in this order (held-out first by default, so a
    # long population has its test set whole first). ["train"] builds the training diffs while
    # the held-out recipe is still being chosen; "SPLIT:N" builds that folder's first N diffs, so
    # ["test:20", "train:150", "test", "train"] gives a first reader something to train and be
    # read on early. Not part of the recipe, so it may change between resumes.
    diff_splits: list[str] = field(default_factory=lambda: ["test", "train"])
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
        check_types(self, None)
        require(
            len(self.diff_splits) >= 1
            and all(re.fullmatch(r"(test|train)(:[1-9][0-9]*)?", s) for s in self.diff_splits)
            and len(set(self.diff_splits)) == len(self.diff_splits),
            "diff_splits",
            'lists "test" and/or "train", each once, or with a count "SPLIT:N" (its first N '
            'diffs), e.g. ["train"] or ["test:20", "train:150", "test", "train"]',
        )
        require(
            isinstance(self.task_options, dict),
            "task_options",
            "is a table of the task's own keys ([task_options] in TOML)",
        )
        require(
            self.dtype in ("float32", "bfloat16", "float16"), "dtype", "float32|bfloat16|float16"
        )
        require(
            self.device in ("cpu", "cuda", "mps", "auto") or self.device.startswith("cuda:"),
            "device",
            f"{self.device!r} is not cpu, cuda, cuda:N, mps or auto",
        )
        require(
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
        require(
            isinstance(self.test_diffs, dict),
            "test_diffs",
            "is a table of [diffs] keys for the held-out diffs ([test_diffs] in TOML)",
        )
        for key, value in self.test_diffs.items():
            if key not in fields_of(DiffConfig):
                close = difflib.get_close_matches(str(key), list(fields_of(DiffConfig)), n=1)
                hint = f"; did you mean 'test_diffs.{close[0]}'?" if close else ""
                raise ConfigError(
                    f"test_diffs.{key} is not a [diffs] key{hint} (known: "
                    f"{', '.join(fields_of(DiffConfig))})"
                )
            check_value(DiffConfig, "test_diffs", key, value, "test_diffs")
        self.diffs_for("test")  # the merged recipe's own checks

    @property
    def base_answer_tokens(self) -> int:
        """How long the data stage's base answers are: the longer of the two splits' recipes.
        Both splits read one file of base answers, each cutting them at its own length."""
        return max(self.diffs.base_answer_tokens, self.diffs_for("test").base_answer_tokens)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {
    "data": DataConfig,
    "textgen": TextGenConfig,
    "diffs": DiffConfig,
    "dit": DitConfig,
    "eval": EvalConfig,
}
# Keys that moved from the shared sections into [task_options] (ditkit 0.1.0), with the default
# they had there. Old presets, files and run directories still load: a key left at that default
# is dropped (the task's default is the same), any other value moves with a deprecation warning.
