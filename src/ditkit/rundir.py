"""A run directory: its layout, its loaders, its config guard and its manifest.

::

    DIR/config.json            the resolved RunConfig (a rerun with another config is refused)
    DIR/data/jobs.jsonl        one row per diff: id, split, topic, trigger prefix, questions, answers
    DIR/data/base_answers.json the base model's own answers (cached, shared by all diffs)
    DIR/diffs/{train,test}/    one ditkit .safetensors file per diff
    DIR/dit/adapter/           the DIT adapter (PEFT folder); dit/checkpoint/ resumes training
    DIR/eval/                  predictions.jsonl, scores.json, paired.json (cache/: server replies)
    DIR/report/                report.md, index.html
    DIR/timings.json           seconds per stage
    DIR/manifest.json          sha256 and size of every artifact, with the stage that makes it

Every file is written atomically (`ditkit.files`), each stage records its artifacts in the
manifest when it finishes, and `verify` checks a directory against it. Both the pipeline and the
evaluation runner import this module (never each other).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .config import RunConfig, upgrade_layout
from .diffs import load_diff
from .errors import ConfigError, DataError
from .evaluate.methods import methods_for
from .files import read_jsonl, sha256_file, write_json
from .models import load_model
from .tasks.base import eval_only_options, get_task, row_weights, task_options

log = logging.getLogger(__name__)

STAGES = ("data", "diffs", "dit", "eval", "report")

# What each stage leaves behind (globs relative to the run directory). Caches and checkpoints
# are working state, not results, so they are not in the manifest.
STAGE_FILES = {
    "data": ("data/jobs.jsonl", "data/base_answers.json"),
    "diffs": ("diffs/train/*.safetensors", "diffs/test/*.safetensors"),
    "dit": ("dit/adapter/*",),
    "eval": ("eval/predictions.jsonl", "eval/scores.json", "eval/paired.json", "eval/judge.json"),
    "report": ("report/*",),
}

# Config sections that may change between reruns of one directory: they only decide what is
# evaluated and how fast, never what an earlier stage built.
FREE_KEYS = ("eval", "threads", "device", "name", "diff_splits")


def resolve_task(cfg: RunConfig) -> RunConfig:
    """Check ``cfg``'s task-dependent keys against its task and fill those left to the task
    (``dit.question``, ``eval.methods``); returns ``cfg``. Done where a run is opened, so the
    config itself stays plain data."""

    task = get_task(cfg.task)
    options = task_options(task, cfg.task_options)
    # Every option written out, so config.json records the values the run used.
    cfg.task_options = dataclasses.asdict(options) if options is not None else {}
    try:
        row_weights(task.row_kinds, cfg.diffs.weights)
    except ConfigError as e:
        raise ConfigError(f"{e} (task {task.name})") from None
    if cfg.dit.question is None:
        cfg.dit.question = task.dit_question
    if cfg.eval.methods is None:
        cfg.eval.methods = list(task.default_methods)
    known = methods_for(task)
    bad = [m for m in cfg.eval.methods if m not in known]
    if bad:
        raise ConfigError(
            f"eval.methods: unknown {bad} for the {task.name} task; choose from {', '.join(known)}"
        )
    return cfg


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a ditkit run directory (its config.json is a run's, not a model's)."""
    p = Path(path)
    return (p / "config.json").is_file() and (
        (p / "manifest.json").is_file() or (p / "data" / "jobs.jsonl").is_file()
    )


class Run:
    """A run directory plus its config; loads the base model lazily, once."""

    def __init__(self, cfg: RunConfig, out: str | Path):
        self.cfg, self.out = resolve_task(cfg), Path(out)
        self._model = None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

    @property
    def task(self):
        """The run's task (`tasks.base.Task`), from ``config.task``."""

        return get_task(self.cfg.task)

    @functools.cached_property
    def options(self):
        """The task's own options (``[task_options]``, its ``options_class``), or None."""

        return task_options(self.task, self.cfg.task_options)

    @property
    def model_and_tok(self):
        if self._model is None:
            device = distributed.device_for(self.cfg.device)
            self._model = load_model(self.cfg.model, dtype=self.cfg.dtype, device=device)
        return self._model

    def jobs(self, split: str | None = None, families: list[str] | None = None) -> list[dict]:
        """The job rows of ``split`` (all: None), only those of ``families`` when given (the
        behaviour suite); DataError names a family no job of the split has."""
        path = self.out / "data" / "jobs.jsonl"
        if not path.exists():
            raise DataError(f"{path} is missing: run the data stage first (--stage data)")
        rows = [r for r in read_jsonl(path) if split is None or r["split"] == split]
        if families:
            absent = sorted(set(families) - {r.get("family") for r in rows})
            if absent:
                raise DataError(
                    f"no {split or ''} diffs of the famil{'ies' if len(absent) > 1 else 'y'} "
                    f"{', '.join(absent)} in {path}: check dit.train_families against "
                    "task_options.families"
                )
            rows = [r for r in rows if r.get("family") in families]
        for r in rows:
            if "label" not in r and "topic" in r:  # jobs written before labels existed
                r["label"] = r["topic"]
        return rows

    def diff_paths(
        self, split: str, families: list[str] | None = None, limit: int | None = None
    ) -> list[Path]:
        """The diff files of a split, in job order (only jobs of ``families``, when given, for
        a task whose jobs have one; the first ``limit``, when given); DataError if any is
        missing. A reader on the first N diffs can train while later ones are still built."""
        jobs = self.jobs(split, families)[:limit]
        paths = [self.out / "diffs" / split / f"{r['diff_id']}.safetensors" for r in jobs]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DataError(
                f"{len(missing)} {split} diffs missing (e.g. {missing[0]}): run --stage diffs"
            )
        return paths

    def test_jobs(self) -> list[dict]:
        """The held-out jobs evaluation reads: the first ``eval.max_test_diffs`` when set."""
        return self.jobs("test")[: self.cfg.eval.max_test_diffs]

    def test_diffs(self):
        """Test diffs with their job rows, for evaluation (times ``eval.diff_scale``; the first
        ``eval.max_test_diffs`` when set)."""

        limit = self.cfg.eval.max_test_diffs
        diffs = [load_diff(p) for p in self.diff_paths("test", limit=limit)]
        if self.cfg.eval.diff_scale != 1.0:
            diffs = [d.scaled(self.cfg.eval.diff_scale) for d in diffs]
        return self.test_jobs(), diffs

    def record_time(self, stage: str, seconds: float) -> None:
        path = self.out / "timings.json"
        t = json.loads(path.read_text()) if path.exists() else {}
        t[stage] = round(t.get(stage, 0.0) + seconds, 1)
        write_json(path, t)

    def claim(self, force: bool = False, write: bool = True) -> None:
        """Write config.json, refusing a directory made by a different config unless ``force``.

        Only ``FREE_KEYS`` may differ: anything else would mix artifacts of two recipes. With
        ``write=False`` (the other processes of a launch) only check.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        if write:
            remove_stale_temps(self.out)
        path = self.out / "config.json"
        new = self.cfg.to_dict()
        if path.exists() and not force:
            try:
                old = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise ConfigError(
                    f"{path} is damaged ({e}): use a new --out directory, or pass --force to "
                    "overwrite it with this config"
                ) from e
            # Keys added since the directory was made compare as their defaults, and so do the
            # task's options an older ditkit kept in the shared sections.
            old = _with_defaults(upgrade_layout(old, str(path)), RunConfig().to_dict())
            defaults = task_options(self.task, {})
            if defaults is not None:
                old["task_options"] = {**dataclasses.asdict(defaults), **old["task_options"]}
            free = {f"task_options.{k}" for k in eval_only_options(self.task)}
            changed = [
                f"{k}: {a!r} -> {b!r}"
                for k, a, b in config_changes(old, new)
                if k.split(".")[0] not in FREE_KEYS and k not in free
            ]
            if changed:
                shown = "; ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
                raise ConfigError(
                    f"{self.out} was made by a different config ({shown}). Mixing them would "
                    "leave artifacts of two recipes in one run: use a new --out directory, or "
                    "pass --force to go on with the new config (files already built are kept)"
                )
        if write:
            write_json(path, new)

    # -- manifest ---------------------------------------------------------------------------

    def record_artifacts(self, stage: str) -> None:
        """Record the sha256 and size of every file ``stage`` made in ``manifest.json``."""
        path = self.out / "manifest.json"
        files = read_manifest(self.out)
        files = {k: v for k, v in files.items() if v["stage"] != stage}
        for p in stage_files(self.out, stage):
            rel = p.relative_to(self.out).as_posix()
            files[rel] = {"stage": stage, "sha256": sha256_file(p), "bytes": p.stat().st_size}
        write_json(path, {"format": "ditkit-run-manifest", "version": 1, "files": files})


def stage_files(out: Path, stage: str) -> list[Path]:
    """The files ``stage`` has made so far in run directory ``out``."""
    return sorted(p for g in STAGE_FILES[stage] for p in Path(out).glob(g) if p.is_file())


def remove_stale_temps(out: Path) -> int:
    """Delete what a killed run's unfinished atomic writes left (``.NAME.*.tmp``) and put back a
    folder that was being swapped (``.NAME.old``); returns how many temporary files there were.
    Only one process writes a run directory at a time, so none of them is in use."""
    stale = list(Path(out).rglob(".*.tmp"))
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for old in Path(out).rglob(".*.old"):  # killed between the two renames of atomic_folder
        target = old.with_name(old.name[1:-4])
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.replace(target)
    if stale:
        log.info("removed %d unfinished temporary file(s) left by an interrupted run", len(stale))
    return len(stale)


def _with_defaults(d: dict, defaults: dict) -> dict:
    out = dict(defaults)
    for k, v in d.items():
        out[k] = (
            _with_defaults(v, defaults[k])
            if isinstance(v, dict) and isinstance(defaults.get(k), dict)
            else v
        )
    return out


def config_changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, old value, new value)`` for every leaf that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{name}.")
        elif a != b:
            out.append((name, a, b))
    return out


def read_manifest(out: Path) -> dict[str, dict]:
    path = Path(out) / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path} is damaged ({e}): delete it; each stage rewrites its part when it reruns"
        ) from e


@dataclass
class Problem:
    """One finding of `verify`: a file that is missing, damaged or not recorded."""

    path: str
    kind: str  # "missing" | "damaged" | "unrecorded"
    stage: str
    out: str = "DIR"

    def __str__(self) -> str:
        cmd = f"ditkit run {self.out}/config.json --out {self.out} --stage {self.stage}"
        fix = f"rerun stage {self.stage} ({cmd})"
        if self.kind == "damaged":
            fix = f"delete it, then {fix}"
        elif self.kind == "unrecorded":
            fix = f"made after stage {self.stage} last finished; rerun it to record the file"
        return f"{self.kind:10s} {self.path}: {fix}"


def verify(out: str | Path) -> list[Problem]:
    """Check every artifact recorded in ``DIR/manifest.json``; returns the problems found."""
    out = Path(out)
    if not (out / "config.json").exists():
        raise DataError(f"{out} has no config.json: pass a run directory made by `ditkit run`")
    files = read_manifest(out)
    if not files:
        raise DataError(
            f"{out / 'manifest.json'} is missing or empty: no stage of this run has finished "
            "(or it was made before ditkit kept manifests); rerun `ditkit run` to write one"
        )
    problems = []
    for rel, rec in sorted(files.items()):
        p = out / rel
        if not p.is_file():
            problems.append(Problem(rel, "missing", rec["stage"], str(out)))
        elif p.stat().st_size != rec["bytes"] or sha256_file(p) != rec["sha256"]:
            problems.append(Problem(rel, "damaged", rec["stage"], str(out)))
    for stage in STAGES:
        for p in stage_files(out, stage):
            rel = p.relative_to(out).as_posix()
            if rel not in files:
                problems.append(Problem(rel, "unrecorded", stage, str(out)))
    return problems
