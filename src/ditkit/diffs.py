"""Weight-diff files: a ``WeightDiff`` is ``{module: (A, B)}`` (and/or dense deltas) plus metadata.

Conventions (see ``lora.py``): ``A [r, out]``, ``B [in, r]``, the diff adds ``(alpha / r) x B A`` to a
projection's output; a dense diff ``D [out, in]`` adds ``x D^T``. Formats read and written here:

- ditkit: one ``.safetensors`` file, tensors ``{module}.A``, ``{module}.B``, ``{module}.delta``,
  metadata (alpha, base model, task, label, trigger, seed, free-form JSON) in the header;
- PEFT adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors`` (any rank, alpha,
  rslora, rank/alpha patterns, target subset); ``lora_A.weight = B^T``, ``lora_B.weight = A^T``;
- the reference code's ``.pt`` (a list of ``{topic, trigger, weight_diff: {module: (A, B)}}``),
  read with ``torch.load(weights_only=True)`` only;
- a full fine-tuned checkpoint minus its base: dense, or SVD-truncated to rank k.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import lora
from .errors import DiffFormatError, DiffMismatchError
from .files import atomic_folder, atomic_write, write_json

log = logging.getLogger(__name__)

FORMAT_TAG = "ditkit-weight-diff"
FORMAT_VERSION = "1"
_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<name>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$"
)


@dataclass
class WeightDiff:
    """One weight diff: low-rank pairs and/or dense deltas by module name, plus metadata.

    ``meta`` holds ``base_model``, ``base_fingerprint``, ``task``, ``label``, ``trigger``, ``seed`` and
    any further JSON-serialisable keys.
    """

    lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    alpha: float = 1.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, (a_ro, b_ir) in self.lowrank.items():
            if a_ro.ndim != 2 or b_ir.ndim != 2 or a_ro.shape[0] != b_ir.shape[1]:
                raise DiffFormatError(
                    f"module {name}: A {tuple(a_ro.shape)} and B {tuple(b_ir.shape)} are not a "
                    "LoRA pair (expected A [r, out], B [in, r])"
                )
            if a_ro.shape[0] == 0 or 0 in a_ro.shape or 0 in b_ir.shape:
                raise DiffFormatError(
                    f"module {name}: A {tuple(a_ro.shape)} and B {tuple(b_ir.shape)} are empty "
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
            a_ro, b_ir = self.lowrank[name]
            d_oi = self.scale(name) * (b_ir.float() @ a_ro.float()).T
        if name in self.dense:
            d_oi = d_oi + self.dense[name].float()
        return d_oi

    def shapes(self) -> dict[str, tuple[int, int]]:
        """``{module: (out, in)}`` implied by the tensors."""
        out = {n: (a.shape[1], b.shape[0]) for n, (a, b) in self.lowrank.items()}
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


# ---------------------------------------------------------------------------------------------
# ditkit files


def save_diff(diff: WeightDiff, path: str | Path) -> Path:
    """Write ``diff`` as one safetensors file (atomically: a killed run never leaves half a file)."""
    path = Path(path)
    tensors = {}
    for name, (a_ro, b_ir) in diff.lowrank.items():
        tensors[f"{name}.A"] = a_ro.detach().contiguous().cpu()
        tensors[f"{name}.B"] = b_ir.detach().contiguous().cpu()
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


def read_header(path: str | Path) -> dict:
    """The safetensors header metadata of a file, with errors that name the file."""
    from safetensors import safe_open

    _check_not_empty(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DiffFormatError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {e}. "
            "Re-create or re-download it."
        ) from e


def _check_not_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DiffFormatError(f"cannot read {path}: {e}; check the path") from e
    if size == 0:
        raise DiffFormatError(
            f"{path} is empty (0 bytes): its write never finished (disk full or a killed run?). "
            "Delete it and re-create it (a resumed `ditkit run` retrains a missing diff)."
        )


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    _check_not_empty(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DiffFormatError(
            f"{path} could not be read (truncated or corrupt?): {e}. Re-create or re-download it."
        ) from e


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _checked_diff(source, lowrank: dict, dense: dict, alpha, meta: dict) -> WeightDiff:
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


def _load_ditkit(path: Path) -> WeightDiff:
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
    tensors = _load_tensors(path)
    lowrank, dense = {}, {}
    for key in tensors:
        name, _, kind = key.rpartition(".")
        if not name or kind not in ("A", "B", "delta"):
            raise DiffFormatError(
                f"{path}: unexpected tensor {key!r} (a ditkit diff holds MODULE.A, MODULE.B and "
                "MODULE.delta). Re-create the file."
            )
        if kind == "A":
            if f"{name}.B" not in tensors:
                raise DiffFormatError(f"{path}: module {name} has A but no B. Re-create the file.")
            lowrank[name] = (tensors[key], tensors[f"{name}.B"])
        elif kind == "delta":
            dense[name] = tensors[key]
        elif f"{name}.A" not in tensors:
            raise DiffFormatError(f"{path}: module {name} has B but no A. Re-create the file.")
    return _checked_diff(path, lowrank, dense, alpha, meta)


# ---------------------------------------------------------------------------------------------
# PEFT adapter folders


def save_peft(
    diff: WeightDiff, folder: str | Path, base_model: str | None = None, extra: dict | None = None
) -> Path:
    """Write ``diff`` as a PEFT LoRA adapter folder that ``PeftModel.from_pretrained`` loads."""
    if diff.dense:
        raise DiffFormatError(
            "a dense (full fine-tune) diff has no exact LoRA form; convert with --rank K to "
            "truncate it by SVD first"
        )
    folder = Path(folder)
    ranks = {n: a.shape[0] for n, (a, _) in diff.lowrank.items()}
    r = max(ranks.values())
    tensors = {}
    for name, (a_ro, b_ir) in diff.lowrank.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = b_ir.detach().T.contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = a_ro.detach().T.contiguous().cpu()
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
        tensors = _load_tensors(weights)
    elif (folder / "adapter_model.bin").exists():
        weights = folder / "adapter_model.bin"
        tensors = _safe_torch_load(weights)
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


def _load_peft(folder: Path) -> WeightDiff:
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
        a_ro = lora_b.T.contiguous()
        # Fold any difference from the stored convention (alpha / r) into A, which is lossless.
        fold = s / (alpha / r)
        lowrank[name] = (a_ro * fold if fold != 1.0 else a_ro, lora_a.T.contiguous())
    meta = _peft_meta(folder, cfg)
    if not lowrank:
        raise DiffFormatError(
            f"{weights} holds no LoRA tensors (names like "
            "base_model.model.MODULE.lora_A.weight); re-save the adapter with peft"
        )
    return _checked_diff(weights, lowrank, {}, alpha, meta)


# ---------------------------------------------------------------------------------------------
# The reference code's pickles and full checkpoints


def _safe_torch_load(path: Path):
    _check_not_empty(path)
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


def load_reference_pt(path: str | Path) -> list[WeightDiff]:
    """Read the reference code's ``.pt`` list of ``{topic, trigger, weight_diff}`` entries."""
    path = Path(path)
    obj = _safe_torch_load(path)
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
        diffs.append(_checked_diff(f"{path} entry {i}", lowrank, {}, 1.0, meta))
    return diffs


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def diff_from_finetune(
    base: nn.Module,
    finetuned: nn.Module,
    rank: int | None = None,
    targets: Sequence[str] = lora.DEFAULT_TARGETS,
) -> tuple[WeightDiff, dict]:
    """``W_ft - W_base`` on the target projections: dense, or truncated SVD of rank ``rank``.

    Returns the diff and a report with the fraction of Frobenius energy kept per module and overall.
    """
    names = lora.find_targets(base, targets)
    ft = dict(finetuned.named_modules())
    dense = {}
    for name in names:
        w_base = base.get_submodule(name).weight.detach().float()
        if name not in ft or ft[name].weight.shape != w_base.shape:
            got = tuple(ft[name].weight.shape) if name in ft else "missing"
            raise DiffMismatchError(
                f"module {name}: base shape {tuple(w_base.shape)}, fine-tuned {got}; the "
                "checkpoint was not fine-tuned from this base model"
            )
        dense[name] = ft[name].weight.detach().float() - w_base
    meta = {"source_format": "full-finetune", **_identity(base)}
    diff = WeightDiff({}, dense, 1.0, meta)
    if rank is None:
        return diff, {"energy_kept": 1.0, "per_module": dict.fromkeys(dense, 1.0)}
    return svd_truncate(diff, rank)


def _identity(model: nn.Module) -> dict:
    from .models import model_identity

    return model_identity(model)


def model_layout(model: nn.Module) -> tuple[dict[str, nn.Linear], dict]:
    """``({module name: Linear}, model_identity(model))``: what `WeightDiff.check_fits` compares."""
    linears = {
        n.removesuffix(".base"): m for n, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    return linears, _identity(model)


def svd_truncate(diff: WeightDiff, rank: int) -> tuple[WeightDiff, dict]:
    """Truncate every module's dense change to rank ``rank``; report the energy kept."""
    lowrank, kept, total, total_kept = {}, {}, 0.0, 0.0
    for name in diff.modules:
        u, s, vh = torch.linalg.svd(diff.delta_weight(name), full_matrices=False)
        k = min(rank, s.numel())
        root = s[:k].sqrt()
        # D ~= U_k S_k V_k^T = (B A)^T with B = V_k sqrt(S_k), A = sqrt(S_k) U_k^T; alpha = k
        # makes the stored scale alpha / r equal 1, so B A is the delta itself.
        # If a module is smaller than ``rank``, shrink A so that (rank / k) B A is still D.
        a_ro = (root[:, None] * u[:, :k].T) * (k / rank)
        lowrank[name] = (a_ro.contiguous(), (vh[:k].T * root).contiguous())
        e, p = float(s.pow(2).sum()), float(s[:k].pow(2).sum())
        kept[name] = p / e if e > 0 else 1.0
        total, total_kept = total + e, total_kept + p
    meta = {**diff.meta, "svd_rank": rank}
    report = {"energy_kept": total_kept / total if total > 0 else 1.0, "per_module": kept}
    return WeightDiff(lowrank, {}, float(rank), meta), report


# ---------------------------------------------------------------------------------------------
# Detection and loading


def detect_format(path: str | Path) -> str:
    """One of ``ditkit``, ``peft``, ``reference-pt``, ``checkpoint``."""
    path = Path(path)
    if not path.exists():
        raise DiffFormatError(
            f"{path} does not exist; check the path (a ditkit .safetensors file, a PEFT adapter "
            "folder, a reference .pt file or a checkpoint folder)"
        )
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            return "peft"
        if (path / "config.json").exists():
            return "checkpoint"
        raise DiffFormatError(
            f"{path} is a folder with neither adapter_config.json (PEFT adapter) nor config.json "
            "(full checkpoint)"
        )
    if path.suffix in (".pt", ".pth", ".bin"):
        return "reference-pt"
    if path.suffix == ".safetensors":
        return "ditkit"
    raise DiffFormatError(
        f"{path}: unknown diff format (expected a ditkit .safetensors file, a PEFT adapter "
        "folder, a reference .pt file or a checkpoint folder)"
    )


def load_diffs(path: str | Path) -> list[WeightDiff]:
    """Load every diff stored at ``path`` (a reference ``.pt`` may hold many)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "ditkit":
        return [_load_ditkit(path)]
    if fmt == "peft":
        return [_load_peft(path)]
    if fmt == "reference-pt":
        return load_reference_pt(path)
    raise DiffFormatError(
        f"{path} is a full model checkpoint; build a diff from it with "
        "`ditkit diff convert CHECKPOINT OUT --base BASE_MODEL [--rank K]`"
    )


def load_diff(path: str | Path, index: int = 0) -> WeightDiff:
    """Load one diff (entry ``index`` of a multi-diff file)."""
    diffs = load_diffs(path)
    if not 0 <= index < len(diffs):
        raise DiffFormatError(f"{path} holds {len(diffs)} diffs; index {index} is out of range")
    return diffs[index]


# ---------------------------------------------------------------------------------------------
# Putting diffs into a model


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
