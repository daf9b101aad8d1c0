"""PEFT LoRA adapter folders: ``adapter_config.json`` + ``adapter_model.safetensors`` (or ``.bin``).

Read: any rank, ``lora_alpha``, ``use_rslora``, ``rank_pattern``/``alpha_pattern`` and target subsets,
each module's effective scale folded into A (lossless). peft stores ``lora_A.weight = B^T``
``[r, in]`` and ``lora_B.weight = A^T`` ``[out, r]``. Written: full module names as
``target_modules`` (a diff covering some layers only stays exact), ditkit's metadata in
``ditkit.json``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import DiffFormatError, DitkitError
from ..files import atomic_folder, write_json
from .core import Format, WeightDiff, checked_diff, load_tensors, safe_torch_load

_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<name>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$"
)


def save_peft(
    diff: WeightDiff, folder: str | Path, base_model: str | None = None, extra: dict | None = None
) -> Path:
    """Write ``diff`` as a PEFT LoRA adapter folder that ``PeftModel.from_pretrained`` loads.

    >>> model, _ = load_model(str(tiny_model_dir))
    >>> folder = save_peft(random_diff(model, 4, seed=0), tmp / "adapter", str(tiny_model_dir))
    >>> sorted(p.name for p in folder.iterdir())
    ['adapter_config.json', 'adapter_model.safetensors', 'ditkit.json']
    >>> load_diff(folder).rank
    4
    """
    if diff.dense:
        raise DiffFormatError(
            "a dense (full fine-tune) diff has no exact LoRA form; convert with --rank K to "
            "truncate it by SVD first"
        )
    folder = Path(folder)
    ranks = {n: a.shape[0] for n, (a, _) in diff.lowrank.items()}
    r = max(ranks.values())
    tensors = {}
    for name, (a_ri, b_or) in diff.lowrank.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a_ri.detach().contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b_or.detach().contiguous().cpu()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or diff.meta.get("base_model"),
        "r": r,
        "lora_alpha": float(diff.alpha),
        # Full names: a diff may cover only some layers, and peft matches names by suffix.
        "target_modules": sorted(diff.lowrank),
        "rank_pattern": {f"^{re.escape(n)}$": k for n, k in ranks.items() if k != r},
        "alpha_pattern": {},
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    meta = {"ditkit_meta": diff.meta, **(extra or {})}
    with atomic_folder(folder) as tmp:  # a killed run never leaves half an adapter folder
        save_file(tensors, str(tmp / "adapter_model.safetensors"))
        write_json(tmp / "adapter_config.json", config)
        write_json(tmp / "ditkit.json", meta)
    return folder


def _pattern_value(name: str, pattern: dict, default):
    """peft's rule: the first pattern key that matches the end of the module name wins."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value, what: str, where: Path) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not math.isfinite(x) or x == 0:
        raise DiffFormatError(
            f"{where}: {what} = {_short(value)} is not a finite non-zero number; fix it or re-save the "
            "adapter with peft"
        )
    return x


def _peft_config(folder: Path) -> tuple[Path, dict]:
    """``adapter_config.json`` of a LoRA adapter ditkit can read, checked."""
    cfg_path = folder / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise DiffFormatError(
            f"{cfg_path} is not readable JSON: {e}; re-save the adapter with peft"
        ) from e
    if not isinstance(cfg, dict):
        raise DiffFormatError(f"{cfg_path} is not a JSON object; re-save the adapter with peft")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise DiffFormatError(
            f"{cfg_path}: peft_type {_short(cfg.get('peft_type'))} is not LORA; only LoRA adapters are "
            "weight diffs ditkit reads"
        )
    for flag in ("use_dora", "fan_in_fan_out"):
        if cfg.get(flag):
            raise DiffFormatError(
                f"{cfg_path}: {flag}=true adapters are not supported; merge it into a full "
                "checkpoint and convert that (`ditkit diff convert CHECKPOINT OUT --base BASE`)"
            )
    return cfg_path, cfg


def _peft_tensors(folder: Path) -> tuple[Path, dict]:
    """The adapter's weights file and its tensors (safetensors, or a weights-only ``.bin``)."""
    weights = folder / "adapter_model.safetensors"
    if weights.exists():
        tensors = load_tensors(weights)
    elif (folder / "adapter_model.bin").exists():
        weights = folder / "adapter_model.bin"
        tensors = safe_torch_load(weights)
        if not isinstance(tensors, dict):
            raise DiffFormatError(f"{weights} is not a dict of tensors; re-save it with peft")
    else:
        raise DiffFormatError(
            f"{folder} has adapter_config.json but no adapter_model.safetensors; copy the "
            "adapter's weights file next to it"
        )
    return weights, tensors


def _peft_meta(folder: Path, cfg: dict) -> dict:
    """Metadata: the base model from the config, plus ditkit's own from ``ditkit.json``."""
    meta = {"base_model": cfg.get("base_model_name_or_path"), "source_format": "peft"}
    side = folder / "ditkit.json"
    if side.exists():
        try:
            extra = json.loads(side.read_bytes()).get("ditkit_meta", {})
        except (OSError, ValueError, AttributeError, RecursionError) as e:
            raise DiffFormatError(
                f"{side} is not a readable JSON object ({e}); fix or delete it (it only holds "
                "metadata)"
            ) from None
        if not isinstance(extra, dict):
            raise DiffFormatError(f"{side}: ditkit_meta is not an object; fix or delete the file")
        meta.update(extra)
    return meta


def _load(folder: Path) -> list[WeightDiff]:
    cfg_path, cfg = _peft_config(folder)
    weights, tensors = _peft_tensors(folder)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _PEFT_KEY.match(str(key))
        if m is None:
            if "lora_" in str(key) or "modules_to_save" in str(key):
                raise DiffFormatError(f"{weights}: unsupported adapter tensor {key}")
            continue
        pairs.setdefault(m["name"], {})[m["ab"]] = t
    alpha = _number(cfg.get("lora_alpha", cfg.get("r", 8)), "lora_alpha", cfg_path)
    alpha_pattern = cfg.get("alpha_pattern") or {}
    if not isinstance(alpha_pattern, dict):
        raise DiffFormatError(f"{cfg_path}: alpha_pattern is not an object; re-save with peft")
    lowrank = {}
    for name, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise DiffFormatError(f"{weights}: module {name} lacks lora_A or lora_B")
        lora_a, lora_b = ab["A"], ab["B"]
        if not all(isinstance(t, torch.Tensor) and t.ndim == 2 for t in (lora_a, lora_b)):
            raise DiffFormatError(f"{weights}: module {name}: lora_A and lora_B must be matrices")
        r = lora_a.shape[0]
        if r == 0 or lora_b.shape[1] != r:
            raise DiffFormatError(
                f"{weights}: module {name}: lora_A {tuple(lora_a.shape)} and lora_B "
                f"{tuple(lora_b.shape)} are not a LoRA pair of rank >= 1 (lora_A [r, in], "
                "lora_B [out, r]); re-save the adapter with peft"
            )
        try:
            a_m = float(_pattern_value(name, alpha_pattern, alpha))
        except (TypeError, ValueError, re.error) as e:
            raise DiffFormatError(f"{cfg_path}: alpha_pattern is malformed ({e})") from None
        s = a_m / math.sqrt(r) if cfg.get("use_rslora") else a_m / r
        # Fold any difference from ditkit's one convention (alpha / r) into B, which is lossless.
        fold = s / (alpha / r)
        lowrank[name] = (lora_a, lora_b * fold if fold != 1.0 else lora_b)
    meta = _peft_meta(folder, cfg)
    if not lowrank:
        raise DiffFormatError(
            f"{weights} holds no LoRA tensors (names like "
            "base_model.model.MODULE.lora_A.weight); re-save the adapter with peft"
        )
    return [checked_diff(weights, lowrank, {}, alpha, meta)]


def _check_target(dst: str | Path) -> None:
    if Path(dst).is_file():
        raise DitkitError(
            f"{dst} is a file but a PEFT adapter is a folder: name a folder (or pass --to ditkit "
            "to write a ditkit .safetensors file); ditkit does not replace a file with a folder"
        )


FORMAT = Format(
    name="peft",
    describes="a PEFT adapter folder",
    detect=lambda path: path.is_dir() and (path / "adapter_config.json").exists(),
    load=_load,
    save=lambda diff, path, base_model: save_peft(diff, path, base_model=base_model),
    check_target=_check_target,
    folder_marker="adapter_config.json (PEFT adapter)",
)
