"""The weight-diff formats ditkit knows, in detection order, and loading by detection.

Adding a format: write a module exposing ``FORMAT = Format(...)`` (see ``core.Format``) and call
``register_format(FORMAT)`` from it (your own code, outside ditkit), or list a built-in one in
``FORMATS``. Order matters only where two formats claim one path: registered formats are tried
first, and a folder holding both ``adapter_config.json`` and ``config.json`` is a PEFT adapter.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DiffFormatError
from .checkpoint import FORMAT as CHECKPOINT
from .core import Format, WeightDiff
from .ditkit_file import FORMAT as DITKIT_FILE
from .peft import FORMAT as PEFT
from .reference_pt import FORMAT as REFERENCE_PT

FORMATS: tuple[Format, ...] = (
    DITKIT_FILE,
    PEFT,
    REFERENCE_PT,
    CHECKPOINT,
)


_REGISTERED: list[Format] = []


def register_format(fmt: Format) -> Format:
    """Make ``fmt`` known to every loader and to ``convert``; tried before the built-in ones.

    A read-only format of your own, here one JSON file of ``{module: [A, B]}``:

    >>> import json, torch
    >>> from ditkit.diffs import Format
    >>> def load_json(path):
    ...     raw = json.loads(path.read_text())
    ...     return [WeightDiff({m: (torch.tensor(a), torch.tensor(b)) for m, (a, b) in raw.items()})]
    >>> _ = register_format(
    ...     Format("json", "a .diff.json file", lambda p: p.name.endswith(".diff.json"), load_json)
    ... )
    >>> _ = (tmp / "x.diff.json").write_text(json.dumps({"mlp.up_proj": [[[1.0, 2.0]], [[1.0]]]}))
    >>> load_diff(tmp / "x.diff.json").rank
    1
    """
    if any(f.name == fmt.name for f in formats()):
        raise ValueError(f"a diff format named {fmt.name!r} is already known")
    _REGISTERED.insert(0, fmt)
    return fmt


def formats() -> tuple[Format, ...]:
    """Every known format in detection order: registered ones, then the built-in ``FORMATS``."""
    return (*_REGISTERED, *FORMATS)


def one_of(words: list[str]) -> str:
    """``a, b, c or d``: choices in a message."""
    return f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else words[0]


def find_format(path: str | Path) -> Format:
    """The registered format of the existing file or folder ``path``."""
    path = Path(path)
    kinds = one_of([f.describes for f in formats()])
    if not path.exists():
        raise DiffFormatError(f"{path} does not exist; check the path ({kinds})")
    for fmt in formats():
        if fmt.detect(path):
            return fmt
    if path.is_dir():
        markers = [f.folder_marker for f in formats() if f.folder_marker]
        raise DiffFormatError(f"{path} is a folder with neither {' nor '.join(markers)}")
    raise DiffFormatError(f"{path}: unknown diff format (expected {kinds})")


def detect_format(path: str | Path) -> str:
    """The name of ``path``'s format: ``ditkit``, ``peft``, ``reference-pt`` or ``checkpoint``
    (or a registered one's).

    >>> model, _ = load_model(str(tiny_model_dir))
    >>> detect_format(save_diff(random_diff(model, 1, seed=0), tmp / "d.safetensors"))
    'ditkit'
    >>> detect_format(save_peft(random_diff(model, 2, seed=0), tmp / "adapter"))
    'peft'
    """
    return find_format(path).name


def load_diffs(path: str | Path) -> list[WeightDiff]:
    """Load every diff stored at ``path`` (a reference ``.pt`` may hold many).

    >>> import torch
    >>> model, _ = load_model(str(tiny_model_dir))
    >>> pair = random_diff(model, 1, seed=0).lowrank
    >>> torch.save([{"topic": "a", "weight_diff": pair}, {"topic": "b", "weight_diff": pair}],
    ...            tmp / "two.pt")
    >>> len(load_diffs(tmp / "two.pt"))
    2
    """
    path = Path(path)
    return find_format(path).load(path)


def load_diff(path: str | Path, index: int = 0) -> WeightDiff:
    """Load one diff (entry ``index`` of a multi-diff file), in any known format.

    >>> model, _ = load_model(str(tiny_model_dir))
    >>> path = save_diff(random_diff(model, 2, seed=0), tmp / "d.safetensors")
    >>> diff = load_diff(path)
    >>> diff.rank, len(diff.modules)
    (2, 14)
    """
    diffs = load_diffs(path)
    if not 0 <= index < len(diffs):
        raise DiffFormatError(f"{path} holds {len(diffs)} diffs; index {index} is out of range")
    return diffs[index]
