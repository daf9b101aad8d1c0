"""The reference code's ``.pt`` files: a list of ``{topic, trigger, weight_diff: {module: (A, B)}}``.

Read with ``torch.load(weights_only=True)`` only: a file that is not a plain tensor container is
refused, and nothing in it runs. ditkit reads this format but does not write it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DiffFormatError
from .core import Format, WeightDiff, checked_diff, safe_torch_load


def load_reference_pt(path: str | Path) -> list[WeightDiff]:
    """Read the reference code's ``.pt`` list of ``{topic, trigger, weight_diff}`` entries."""
    path = Path(path)
    obj = safe_torch_load(path)
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
            lowrank[str(n)] = (ab[0], ab[1])
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
