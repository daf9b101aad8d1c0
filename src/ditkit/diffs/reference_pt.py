"""The reference code's ``.pt`` files: its weight diffs and its DIT adapters.

- A diff file is a list of ``{topic, trigger, weight_diff: {module: (A [r, out], B [in, r])}}``
  with ``delta W = A^T B^T / r``: in peft's (and ditkit's) naming ``lora_A = B^T`` and
  ``lora_B = A^T``, the letters swapped.
- A DIT adapter file (``introspection_lora.pt``, released as ``dit-adapter.pt``) is one dict
  ``{module: (A [out, R], B [R, in])}`` with ``delta W = A B / R``: ``lora_B = A``,
  ``lora_A = B``, and no question or base model recorded (the reference trains with "What topic have
  you been trained on?", or "What news headline have you been trained on?" for news).

Read with ``torch.load(weights_only=True)`` only: a file that is not a plain tensor container is
refused, and nothing in it runs. ditkit reads this format but does not write it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import DiffFormatError
from .core import Format, WeightDiff, checked_diff, safe_torch_load

REFERENCE_QUESTION = "What topic have you been trained on?"


def load_reference_pt(path: str | Path) -> list[WeightDiff]:
    """Read the reference code's ``.pt`` list of ``{topic, trigger, weight_diff}`` entries, or
    its DIT adapter (one diff, the adapter)."""
    path = Path(path)
    obj = safe_torch_load(path)
    if _is_adapter(obj):
        return [_adapter(path, obj)]
    entries = obj if isinstance(obj, list) else [obj]
    if not entries:
        raise DiffFormatError(f"{path} holds an empty list: no diffs to load")
    diffs = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("weight_diff"), dict):
            raise DiffFormatError(
                f"{path}: entry {i} has no 'weight_diff' dict; the reference format is a list of "
                "{topic, trigger, weight_diff: {module: (A, B)}}"
            )
        lowrank = {}
        for n, ab in e["weight_diff"].items():
            if not isinstance(ab, list | tuple) or len(ab) != 2:
                raise DiffFormatError(
                    f"{path}: entry {i}, module {n}: expected a pair (A [r, out], B [in, r])"
                )
            lowrank[str(n)] = (_transposed(ab[1]), _transposed(ab[0]))
        meta = {
            "label": e.get("topic"),
            "topic": e.get("topic"),
            "trigger": e.get("trigger"),
            "task": "hidden_topic" if "topic" in e else None,
            "source_format": "reference-pt",
            "source_index": i,
        }
        meta.update({k: v for k, v in e.items() if k != "weight_diff" and _jsonable(v)})
        diffs.append(checked_diff(f"{path} entry {i}", lowrank, {}, 1.0, meta))
    return diffs


def _is_adapter(obj) -> bool:
    """A reference DIT adapter: module names mapped straight to (A, B) pairs."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and "weight_diff" not in obj
        and all(isinstance(v, list | tuple) and len(v) == 2 for v in obj.values())
    )


def _adapter(path: Path, obj: dict) -> WeightDiff:
    """The reference's DIT adapter as a ditkit one: its (A [out, R], B [R, in]) are peft's
    (lora_B, lora_A)."""
    lowrank = {}
    for name, (a_or, b_ri) in obj.items():
        if not (torch.is_tensor(a_or) and torch.is_tensor(b_ri)) or a_or.ndim != 2:
            raise DiffFormatError(
                f"{path}: module {name}: a reference DIT adapter maps each module to a pair of "
                "2-d tensors (A [out, R], B [R, in])"
            )
        lowrank[str(name)] = (b_ri, a_or)
    meta = {"source_format": "reference-dit-adapter", "question": REFERENCE_QUESTION}
    return checked_diff(f"{path} (reference DIT adapter)", lowrank, {}, 1.0, meta)


def _transposed(t):
    """``t`` transposed if it is a matrix; anything else as it is, for `checked_diff` to refuse
    with the file's name."""
    return t.T.contiguous() if torch.is_tensor(t) and t.ndim == 2 else t


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


FORMAT = Format(
    name="reference-pt",
    describes="a reference .pt file",
    detect=lambda path: not path.is_dir() and path.suffix in (".pt", ".pth", ".bin"),
    load=load_reference_pt,
)
