"""ditkit's own format: one ``.safetensors`` file.

Version 2 (written since ditkit 0.2): tensors ``{module}.lora_A`` ``[r, in]`` and
``{module}.lora_B`` ``[out, r]`` (peft's ``lora_A.weight`` and ``lora_B.weight``: the change is
``(alpha / r) B A``) and ``{module}.delta`` ``[out, in]``; the header holds ``format``,
``format_version``, ``alpha`` and a JSON ``meta`` (base model, task, label, trigger, seed,
free-form keys). Version 1 files are read too: they hold the same pair transposed and under the
other letters, ``{module}.A`` ``[r, out]`` (= B^T) and ``{module}.B`` ``[in, r]`` (= A^T).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from ..errors import DiffFormatError, DitkitError
from ..files import atomic_write
from .core import Format, WeightDiff, checked_diff, load_tensors, read_header

FORMAT_TAG = "ditkit-weight-diff"
FORMAT_VERSION = "2"
# version -> (the two tensor suffixes, how a stored pair becomes (A [r, in], B [out, r]))
_PAIRS = {
    "1": (("A", "B"), lambda first, second: (second.T.contiguous(), first.T.contiguous())),
    "2": (("lora_A", "lora_B"), lambda first, second: (first, second)),
}


def save_diff(diff: WeightDiff, path: str | Path) -> Path:
    """Write ``diff`` as one safetensors file (atomically: a killed run never leaves half a file).

    >>> model, _ = load_model(str(tiny_model_dir))
    >>> diff = random_diff(model, 1, seed=0)
    >>> diff.meta = {"label": "volcanoes"}
    >>> path = save_diff(diff, tmp / "volcanoes.safetensors")
    >>> load_diff(path).meta["label"]
    'volcanoes'
    """
    path = Path(path)
    tensors = {}
    for name, (a_ri, b_or) in diff.lowrank.items():
        tensors[f"{name}.lora_A"] = a_ri.detach().contiguous().cpu()
        tensors[f"{name}.lora_B"] = b_or.detach().contiguous().cpu()
    for name, d_oi in diff.dense.items():
        tensors[f"{name}.delta"] = d_oi.detach().contiguous().cpu()
    header = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "alpha": repr(float(diff.alpha)),
        "meta": json.dumps(diff.meta, sort_keys=True),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return path


def _load(path: Path) -> list[WeightDiff]:
    header = read_header(path)
    if header.get("format") != FORMAT_TAG:
        raise DiffFormatError(
            f"{path} is a safetensors file without ditkit weight-diff metadata; if it is a PEFT "
            "adapter, pass the folder holding adapter_config.json instead"
        )
    try:
        alpha = float(header["alpha"])
        meta = json.loads(header.get("meta", "{}"))
    except (KeyError, ValueError, RecursionError) as e:
        raise DiffFormatError(
            f"{path}: the header's alpha or meta is missing or malformed ({e!r}); the file was "
            "not written by ditkit's save_diff. Re-create it."
        ) from None
    if not isinstance(meta, dict):
        raise DiffFormatError(f"{path}: the header's meta is not a JSON object. Re-create it.")
    version = header.get("format_version", "1")
    if version not in _PAIRS:
        raise DiffFormatError(
            f"{path} is a ditkit diff of format version {version}, newer than this ditkit reads "
            f"({', '.join(_PAIRS)}): upgrade ditkit"
        )
    (first, second), to_pair = _PAIRS[version]
    tensors = load_tensors(path)
    lowrank, dense = {}, {}
    for key in tensors:
        name, _, kind = key.rpartition(".")
        if not name or kind not in (first, second, "delta"):
            raise DiffFormatError(
                f"{path}: unexpected tensor {key!r} (a ditkit diff of format version {version} "
                f"holds MODULE.{first}, MODULE.{second} and MODULE.delta). Re-create the file."
            )
        partner = f"{name}.{second if kind == first else first}"
        if kind == "delta":
            dense[name] = tensors[key]
        elif partner not in tensors:
            raise DiffFormatError(
                f"{path}: module {name} has {kind} but no {partner.rpartition('.')[2]}. "
                "Re-create the file."
            )
        elif kind == first:
            lowrank[name] = to_pair(tensors[key], tensors[partner])
    return [checked_diff(path, lowrank, dense, alpha, meta)]


def _check_target(dst: str | Path) -> None:
    if Path(dst).is_dir():
        raise DitkitError(
            f"{dst} is a folder but a ditkit diff is one file: name a file (e.g. "
            f"{Path(dst) / 'diff.safetensors'}), or pass --to peft to write an adapter folder"
        )


FORMAT = Format(
    name="ditkit",
    describes="a ditkit .safetensors file",
    detect=lambda path: not path.is_dir() and path.suffix == ".safetensors",
    load=_load,
    save=lambda diff, path, base_model: save_diff(diff, path),
    check_target=_check_target,
)
