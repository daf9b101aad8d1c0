"""DIT adapters shipped inside the package, one per embedded base model.

A shipped adapter is a PEFT folder under ``ditkit/data/adapters/NAME/`` whose ``ditkit.json``
records, besides the adapter's own metadata: the sha256 of ``adapter_model.safetensors``, the
base model and the sha256 of its file, the question, the prompt format, the diff recipe it was
trained on, and the list of its training topics (which a run reading it must not test on).
``ship_adapter`` writes such a folder from a finished run.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import torch

from .diffs import WeightDiff, load_diff, save_peft
from .errors import DataError, DiffFormatError, DiffMismatchError
from .files import read_jsonl, sha256_file, write_json
from .models import EMBEDDED, model_identity

log = logging.getLogger(__name__)

SHIPPED = {"smollm2-135m": "smollm2-135m-hidden-topic"}  # embedded base -> adapter folder


def adapters_root() -> Path:
    return Path(str(resources.files("ditkit") / "data" / "adapters"))


def shipped_dir(base: str) -> Path | None:
    """The shipped adapter folder for embedded base ``base``, or None when none is shipped."""
    name = SHIPPED.get(base)
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


def load_shipped(base: str, model=None) -> tuple[WeightDiff, dict, Path]:
    """The shipped adapter for ``base``, its manifest and folder; checks sha256 and base model."""
    folder = shipped_dir(base)
    if folder is None:
        raise DataError(
            f"no DIT adapter is shipped for base model {base!r} (shipped: "
            f'{", ".join(sorted(SHIPPED))}); train one with dit.adapter = "train"'
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


def shipped_training_topics(base: str) -> list[str]:
    """Every name (topic and alias) the shipped adapter for ``base`` was trained on."""
    folder = shipped_dir(base)
    return list(_manifest(folder).get("training_names", [])) if folder else []


def ship_adapter(run_dir: Path, dest: Path, base: str = "smollm2-135m") -> Path:
    """Write ``run_dir``'s DIT adapter to ``dest`` in bf16 with the manifest described above."""

    run_dir = Path(run_dir)
    adapter = load_diff(run_dir / "dit" / "adapter").to(torch.bfloat16)
    cfg = json.loads((run_dir / "config.json").read_text())
    jobs_path = run_dir / "data" / "jobs.jsonl"
    if not jobs_path.exists():
        raise DataError(f"{jobs_path} is missing: ship an adapter from a finished run")
    train = [j for j in read_jsonl(jobs_path) if j["split"] == "train"]
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
        task_options=cfg.get("task_options", {}),
        source_run=cfg.get("name"),
        training_topics=sorted(j["topic"] for j in train),
        training_names=sorted({n for j in train for n in [j["topic"], *j["aliases"]]}),
    )
    write_json(Path(dest) / "ditkit.json", manifest)
    log.info("shipped adapter written to %s (%d training topics)", dest, len(train))
    return Path(dest)
