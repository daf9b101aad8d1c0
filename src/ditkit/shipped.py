"""DIT adapters shipped inside the package, per embedded base model and task.

For SmolLM2-135M two are shipped: the hidden-topic reader (what a hidden-topic run with
``dit.adapter = "shipped"``, e.g. the quickstart, reads with) and the joint behaviour reader (the
behaviour suite's families, or "nothing unusual"), which ``describe``, ``audit`` and ``trigger``
use when no adapter is given.

A shipped adapter is a PEFT folder under ``ditkit/data/adapters/NAME/`` whose ``ditkit.json``
records, besides the adapter's own metadata: the sha256 of ``adapter_model.safetensors``, the
base model and the sha256 of its file, the question, the prompt format, the diff recipe it was
trained on and its run's held-out recipe (what a run reading it trains its diffs with), and its
training labels and names (which a run reading it must not test on).
``ship_adapter`` writes such a folder from a finished run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from importlib import resources
from pathlib import Path

import torch

from .config import from_dict
from .diffs import WeightDiff, load_diff, save_peft
from .errors import ConfigError, DataError, DiffFormatError, DiffMismatchError
from .files import sha256_file, write_json
from .models import EMBEDDED, model_identity
from .rundir import Run
from .tasks.base import DEFAULT_TASK, get_task

log = logging.getLogger(__name__)

# embedded base -> {task: adapter folder}
SHIPPED = {
    "smollm2-135m": {
        "hidden_topic": "smollm2-135m-hidden-topic",
        "behaviours": "smollm2-135m-behaviours",
    }
}
# What describe, audit and trigger read with when given no adapter: the joint behaviour reader
# (it names the kind of behaviour, or nothing; on the population's held-out topic diffs it read
# as many topics as the hidden-topic reader, docs/results.md), else the base's hidden-topic one.
READER_TASK = "behaviours"


def adapters_root() -> Path:
    return Path(str(resources.files("ditkit") / "data" / "adapters"))


def default_task(base: str) -> str:
    """The task of the adapter read with by default for ``base`` (`READER_TASK` if shipped)."""
    return READER_TASK if shipped_dir(base, READER_TASK) else DEFAULT_TASK


def run_task_reader(base: str, task: str) -> str:
    """Whose shipped reader a ``task`` run with ``dit.adapter = "shipped"`` reads with: its own,
    or, for a task with none shipped (news: the cross-task preset), the hidden-topic one."""
    return task if shipped_dir(base, task) else DEFAULT_TASK


def shipped_dir(base: str, task: str = DEFAULT_TASK) -> Path | None:
    """The adapter folder shipped for embedded base ``base`` and ``task``, or None."""
    name = SHIPPED.get(base, {}).get(task)
    if name is None:
        return None
    path = adapters_root() / name
    return path if (path / "adapter_config.json").exists() else None


def _manifest(folder: Path) -> dict:
    path = folder / "ditkit.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DiffFormatError(f"{path} is missing or not JSON ({e}); reinstall ditkit") from e


def check_base(adapter: WeightDiff, model, source: str | Path) -> None:
    """Refuse an adapter trained on another base model, naming both."""
    want = adapter.meta.get("base_fingerprint")
    have = model_identity(model)
    if want and want != have["base_fingerprint"]:
        raise DiffMismatchError(
            f"{source} was trained on base model {adapter.meta.get('base_model')!r} (fingerprint "
            f"{want}) but the model given is {have['base_model']!r} ({have['base_fingerprint']}); "
            "use that base model (--base) or an adapter trained on this one (--adapter, or "
            'dit.adapter = "train")'
        )


def load_shipped(base: str, model=None, task: str | None = None) -> tuple[WeightDiff, dict, Path]:
    """The adapter shipped for ``base`` and ``task`` (None: `default_task`), its manifest and
    folder; checks sha256 and base model."""
    task = task or default_task(base)
    folder = shipped_dir(base, task)
    if folder is None:
        shipped = "; ".join(f"{b}: {', '.join(t)}" for b, t in sorted(SHIPPED.items()))
        raise DataError(
            f"no DIT adapter is shipped for base model {base!r} and task {task!r} (shipped: "
            f'{shipped}); train one with dit.adapter = "train"'
        )
    manifest = _manifest(folder)
    weights = folder / "adapter_model.safetensors"
    digest = sha256_file(weights)
    if digest != manifest.get("adapter_sha256"):
        raise DiffFormatError(
            f"{weights} has sha256 {digest[:16]}... but {folder / 'ditkit.json'} records "
            f"{str(manifest.get('adapter_sha256'))[:16]}...: the file is damaged; reinstall ditkit"
        )
    adapter = load_diff(folder)
    if model is not None:
        check_base(adapter, model, folder)
    return adapter, manifest, folder


def is_shipped_spec(spec) -> bool:
    """Whether an adapter argument names a shipped adapter (``shipped``, ``shipped:TASK``) and
    not a local folder or file of that name."""
    text = str(spec)
    return (text == "shipped" or text.startswith("shipped:")) and not Path(text).exists()


def spec_task(spec: str, default: str | None = None) -> str | None:
    """The task a ``shipped:TASK`` spec names; ``default`` for a plain ``shipped``."""
    return spec.partition(":")[2] or default


def load_shipped_spec(spec: str, base: str, model=None) -> tuple[WeightDiff, str]:
    """The adapter a ``shipped`` / ``shipped:TASK`` spec names for ``base`` (``shipped``: the
    default one, `default_task`), with the folder it came from."""
    adapter, _, folder = load_shipped(base, model, task=spec_task(spec))
    return adapter, str(folder)


def shipped_training_topics(base: str, spec: str = "shipped") -> list[str]:
    """Every name (topic and alias, a joint reader's contents) the adapter shipped for ``base``
    that ``spec`` (``shipped``: the hidden-topic one, ``shipped:TASK``) was trained on."""
    folder = shipped_dir(base, spec_task(spec, DEFAULT_TASK))
    return list(_manifest(folder).get("training_names", [])) if folder else []


def ship_adapter(
    run_dir: Path,
    dest: Path,
    base: str = "smollm2-135m",
    read_scale: float = 1.0,
    nothing_margin: float | None = None,
) -> Path:
    """Write ``run_dir``'s DIT adapter to ``dest`` in bf16 with the manifest described above;
    ``read_scale``: the multiplier `describe` and `audit` read diffs at with it by default;
    ``nothing_margin``: `audit`'s default ``min_margin`` with it (a behaviour reader only)."""

    if not read_scale > 0:
        raise ConfigError(
            f"read_scale = {read_scale}: give a multiplier > 0 (1: the diffs as trained)"
        )
    run_dir = Path(run_dir)
    adapter = load_diff(run_dir / "dit" / "adapter").to(torch.bfloat16)
    adapter.meta["read_scale"] = float(read_scale)
    if nothing_margin is not None:
        adapter.meta["nothing_margin"] = float(nothing_margin)
    cfg = json.loads((run_dir / "config.json").read_text())
    jobs_path = run_dir / "data" / "jobs.jsonl"
    if not jobs_path.exists():
        raise DataError(f"{jobs_path} is missing: ship an adapter from a finished run")
    run = Run(from_dict(cfg, run_dir / "config.json"), run_dir)
    # The diffs the adapter saw: a reader of a size sweep trains on the first
    # dit.max_train_diffs (of dit.train_families), not on every training diff of its run.
    train = run.jobs("train", run.cfg.dit.train_families)[: run.cfg.dit.max_train_diffs]
    task = get_task(cfg.get("task") or DEFAULT_TASK)
    if nothing_margin is not None and not math.isfinite(nothing_margin):
        raise ConfigError(f"nothing_margin = {nothing_margin}: give a finite number, e.g. -0.25")
    if nothing_margin is not None and task.name != "behaviours":
        raise ConfigError(
            f"nothing_margin: {run_dir} reads the {task.name} task, whose reader cannot say "
            "'nothing found'; give it for a behaviour-suite reader only"
        )
    save_peft(adapter, dest)
    spec = EMBEDDED.get(base)
    manifest = _manifest(Path(dest))
    manifest.update(
        adapter_sha256=sha256_file(Path(dest) / "adapter_model.safetensors"),
        base_model=base,
        base_file_sha256=spec.sha256 if spec else None,
        question=adapter.meta.get("question"),
        system_prompt=adapter.meta.get("system_prompt"),
        diff_recipe=cfg["diffs"],
        # The held-out diffs' recipe where the run had its own (what a run reading this adapter,
        # e.g. the quickstart, trains its diffs with); else the training recipe serves both.
        heldout_diff_recipe=dataclasses.asdict(run.cfg.diffs_for("test")),
        task_options=cfg.get("task_options", {}),
        source_run=cfg.get("name"),
        training_labels=sorted(j.get("label", j.get("topic")) for j in train),
        training_names=sorted({n for j in train for n in task.names(j)}),
    )
    if task.name == DEFAULT_TASK:  # what the quickstart keeps out of its test topics
        manifest["training_topics"] = sorted(j["topic"] for j in train)
    write_json(Path(dest) / "ditkit.json", manifest)
    log.info("shipped adapter written to %s (%d training diffs)", dest, len(train))
    return Path(dest)
