"""What every format shares: the ``WeightDiff``, the checks a loaded diff passes, readers that name
the file in their errors, the ``Format`` a format module exposes, and putting diffs into a model.

Conventions (see ``lora.py``): ``A [r, in]``, ``B [out, r]`` as peft's ``lora_A`` and ``lora_B``;
the diff adds ``(alpha / r) B A`` to a projection's ``[out, in]`` weight, a dense diff ``D [out, in]``
adds ``D``.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from .. import lora
from ..errors import DiffFormatError, DiffMismatchError
from ..models import model_identity


@dataclass
class WeightDiff:
    """One weight diff: low-rank pairs and/or dense deltas by module name, plus metadata.

    ``meta`` holds ``base_model``, ``base_fingerprint``, ``task``, ``label``, ``trigger``, ``seed`` and
    any further JSON-serialisable keys. A low-rank pair is ``(A [r, in], B [out, r])``, peft's
    ``lora_A.weight`` and ``lora_B.weight``: the diff adds ``(alpha / r) B A`` to the
    projection's ``[out, in]`` weight.

    >>> import torch
    >>> a, b = torch.ones(1, 4), torch.ones(3, 1)  # rank 1, in 4, out 3
    >>> diff = WeightDiff({"model.layers.0.mlp.up_proj": (a, b)}, meta={"label": "tea"})
    >>> diff.rank, diff.delta_weight("model.layers.0.mlp.up_proj").shape
    (1, torch.Size([3, 4]))
    """

    lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    alpha: float = 1.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, (a_ri, b_or) in self.lowrank.items():
            if a_ri.ndim != 2 or b_or.ndim != 2 or a_ri.shape[0] != b_or.shape[1]:
                raise DiffFormatError(
                    f"module {name}: A {tuple(a_ri.shape)} and B {tuple(b_or.shape)} are not a "
                    "LoRA pair (expected A [r, in], B [out, r], as peft's lora_A and lora_B)"
                )
            if a_ri.shape[0] == 0 or 0 in a_ri.shape or 0 in b_or.shape:
                raise DiffFormatError(
                    f"module {name}: A {tuple(a_ri.shape)} and B {tuple(b_or.shape)} are empty "
                    "(rank 0 or a zero-sized side); a LoRA pair needs rank >= 1"
                )
        for name, d_oi in self.dense.items():
            if d_oi.ndim != 2 or 0 in d_oi.shape:
                raise DiffFormatError(
                    f"module {name}: dense delta of shape {tuple(d_oi.shape)} is not a non-empty "
                    "[out, in] matrix"
                )
        if not self.lowrank and not self.dense:
            raise DiffFormatError("a weight diff needs at least one module")

    @property
    def modules(self) -> list[str]:
        return sorted(set(self.lowrank) | set(self.dense))

    @property
    def rank(self) -> int:
        """Largest rank over the low-rank modules (0 when the diff is dense only)."""
        return max((a.shape[0] for a, _ in self.lowrank.values()), default=0)

    def scale(self, name: str) -> float:
        return self.alpha / self.lowrank[name][0].shape[0]

    def delta_weight(self, name: str) -> torch.Tensor:
        """The dense ``[out, in]`` change this diff makes to module ``name``."""
        d_oi = torch.zeros(())
        if name in self.lowrank:
            a_ri, b_or = self.lowrank[name]
            d_oi = self.scale(name) * (b_or.float() @ a_ri.float())
        if name in self.dense:
            d_oi = d_oi + self.dense[name].float()
        return d_oi

    def shapes(self) -> dict[str, tuple[int, int]]:
        """``{module: (out, in)}`` implied by the tensors."""
        out = {n: (b.shape[0], a.shape[1]) for n, (a, b) in self.lowrank.items()}
        out.update({n: tuple(d.shape) for n, d in self.dense.items()})
        return out

    def norms(self) -> dict[str, float]:
        """Frobenius norm of each module's dense change."""
        return {n: float(self.delta_weight(n).norm()) for n in self.modules}

    def check_fits(
        self, model: nn.Module, source: str | Path = "weight diff", layout: tuple | None = None
    ) -> None:
        """Raise ``DiffMismatchError`` naming the module and both shapes if ``model`` differs.

        ``layout`` is ``model_layout(model)``, for callers that check many diffs against one model.
        """
        linears, have = layout or model_layout(model)
        for name, (out_f, in_f) in self.shapes().items():
            mod = linears.get(name)
            if mod is None:
                raise DiffMismatchError(
                    f"{source}: module {name} is not a Linear layer of the base model; the diff "
                    "was made for another architecture. Pass the base model it was trained on "
                    f"(recorded: {self.meta.get('base_model', 'unknown')})."
                )
            if (mod.out_features, mod.in_features) != (out_f, in_f):
                raise DiffMismatchError(
                    f"{source}: module {name} has shape [out={out_f}, in={in_f}] in the diff but "
                    f"[out={mod.out_features}, in={mod.in_features}] in the base model; pass the "
                    f"base model it was trained on (recorded: {self.meta.get('base_model')})."
                )
        want = self.meta.get("base_fingerprint")
        if want and want != have["base_fingerprint"]:
            raise DiffMismatchError(
                f"{source} was made for base model {self.meta.get('base_model')!r} "
                f"(fingerprint {want}) but the model given is {have['base_model']!r} "
                f"(fingerprint {have['base_fingerprint']}): its layers, vocabulary or "
                "architecture differ. Pass the base model the diff was trained on (--base)."
            )

    def scaled(self, factor: float) -> WeightDiff:
        """This diff multiplied by ``factor`` (every module's change, low-rank and dense)."""
        de = {n: d * factor for n, d in self.dense.items()}
        return WeightDiff(dict(self.lowrank), de, self.alpha * factor, dict(self.meta))

    def to(self, dtype: torch.dtype | None = None, device: str | None = None) -> WeightDiff:
        """A copy with every tensor moved/cast."""
        lr = {n: (a.to(device, dtype), b.to(device, dtype)) for n, (a, b) in self.lowrank.items()}
        de = {n: d.to(device, dtype) for n, d in self.dense.items()}
        return WeightDiff(lr, de, self.alpha, dict(self.meta))


@dataclass(frozen=True)
class Format:
    """One weight-diff format, as its module exposes it (``FORMAT``) to the registry.

    ``detect`` looks at an existing path's name or marker file, never its contents; ``load``
    returns every diff stored there, checked (``checked_diff``), or raises ``DiffFormatError``
    saying what to do. ``save`` is ``None`` for a format ditkit reads but never writes; otherwise
    ``check_target`` refuses a destination ``save`` cannot write, before any work starts.
    ``describes`` and ``folder_marker`` name the format in the errors for a path no format claims.
    """

    name: str
    describes: str  # "a PEFT adapter folder"
    detect: Callable[[Path], bool]
    load: Callable[[Path], list[WeightDiff]]
    save: Callable[[WeightDiff, Path, str | None], Path] | None = None  # (diff, path, base_model)
    check_target: Callable[[str | Path], None] = lambda dst: None
    folder_marker: str | None = None  # "adapter_config.json (PEFT adapter)", for folder formats


# ---------------------------------------------------------------------------------------------
# Checks every loaded diff passes, and readers whose errors name the file

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def checked_diff(source, lowrank: dict, dense: dict, alpha, meta: dict) -> WeightDiff:
    """A ``WeightDiff`` from loaded tensors, refusing anything a valid diff cannot hold."""
    named = [(f"{n} (A)", ab[0]) for n, ab in lowrank.items()]
    named += [(f"{n} (B)", ab[1]) for n, ab in lowrank.items()]
    named += [(f"{n} (delta)", d) for n, d in dense.items()]
    for what, t in named:
        if not isinstance(t, torch.Tensor):
            raise DiffFormatError(
                f"{source}: module {what} is a {type(t).__name__}, not a tensor; the file is not "
                "a weight diff. Re-create it."
            )
        if t.dtype not in _DTYPES:
            raise DiffFormatError(
                f"{source}: module {what} has dtype {str(t.dtype).removeprefix('torch.')}; weight "
                "diffs hold float16, bfloat16, float32 or float64 tensors. Re-create the file."
            )
        if not bool(torch.isfinite(t).all()):
            raise DiffFormatError(
                f"{source}: module {what} holds NaN or inf values: the training that made it "
                "diverged. Retrain it (e.g. with a lower learning rate) or delete it; it cannot "
                "be used."
            )
    if not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha == 0:
        raise DiffFormatError(
            f"{source}: alpha {alpha!r} is not a finite non-zero number. Re-create the file."
        )
    try:
        return WeightDiff(lowrank, dense, float(alpha), meta)
    except DiffFormatError as e:
        raise DiffFormatError(f"{source}: {e}. Re-create the file.") from None


def check_not_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DiffFormatError(f"cannot read {path}: {e}; check the path") from e
    if size == 0:
        raise DiffFormatError(
            f"{path} is empty (0 bytes): its write never finished (disk full or a killed run?). "
            "Delete it and re-create it (a resumed `ditkit run` retrains a missing diff)."
        )


def read_header(path: str | Path) -> dict:
    """The safetensors header metadata of a file, with errors that name the file."""
    check_not_empty(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DiffFormatError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {e}. "
            "Re-create or re-download it."
        ) from e


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, with errors that name the file."""
    check_not_empty(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DiffFormatError(
            f"{path} could not be read (truncated or corrupt?): {e}. Re-create or re-download it."
        ) from e


def safe_torch_load(path: Path):
    """``torch.load(weights_only=True)``: a pickle that would run code is refused, never run."""
    check_not_empty(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = (
            f"it would call {code[1]} when unpickled (arbitrary code)"
            if code
            else "it is not a plain tensor container (unpickling it needs arbitrary code), or "
            "it is corrupt"
        )
        raise DiffFormatError(
            f"refused to load {path}: {what}; torch.load(weights_only=True) stopped and nothing "
            "in it was run. If you trust the file, convert it where you trust it (e.g. to "
            "safetensors); otherwise re-create it."
        ) from e
    except Exception as e:  # torch.load raises assorted errors on truncated or foreign files
        raise DiffFormatError(
            f"{path} is truncated or corrupt: {e}. Re-create or re-download it."
        ) from e


# ---------------------------------------------------------------------------------------------
# Putting diffs into a model


def model_layout(model: nn.Module) -> tuple[dict[str, nn.Linear], dict]:
    """``({module name: Linear}, model_identity(model))``: what `WeightDiff.check_fits` compares."""
    linears = {
        n.removesuffix(".base"): m for n, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    return linears, model_identity(model)


def install_diffs(
    model: nn.Module,
    diffs: Sequence[WeightDiff],
    row_index: torch.Tensor,
    sources: Sequence[str] | None = None,
) -> None:
    """Load ``diffs`` as frozen banks into an injected model; batch row i uses ``diffs[row_index[i]]``.

    Ranks may differ between diffs (padded with zeros, which add nothing); modules a diff lacks get
    zeros. Raises ``DiffMismatchError`` if any diff does not fit the model.
    """
    layers = lora.diff_layers(model)
    if not layers:
        raise ValueError("inject the model (ditkit.lora.inject) before installing diffs")
    layout = model_layout(model)  # one walk of the model for all the diffs
    for i, d in enumerate(diffs):
        d.check_fits(model, sources[i] if sources else f"diff {i}", layout)
        missing = set(d.modules) - set(layers)
        if missing:
            raise DiffMismatchError(
                f"{sources[i] if sources else f'diff {i}'}: modules {sorted(missing)[:3]} are not "
                f"wrapped; inject with targets covering them (wrapped: {sorted(layers)[:2]}...)"
            )
    lora.install_banks(
        model,
        [{n: (a, b, d.scale(n)) for n, (a, b) in d.lowrank.items()} for d in diffs],
        [d.dense for d in diffs],
        row_index,
    )
