"""A full fine-tuned checkpoint minus its base: ``W_ft - W_base`` on the target projections.

Kept dense, or truncated by SVD to rank k (stored with alpha = k, so the stored scale is 1; the
report gives the fraction of Frobenius energy kept). A checkpoint folder is not itself a diff:
``load`` says how to build one, and ditkit never writes this format.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .. import lora, models
from ..errors import DiffFormatError, DiffMismatchError
from .core import Format, WeightDiff

log = logging.getLogger(__name__)


def diff_from_finetune(
    base: nn.Module,
    finetuned: nn.Module,
    rank: int | None = None,
    targets: Sequence[str] = lora.DEFAULT_TARGETS,
) -> tuple[WeightDiff, dict]:
    """``W_ft - W_base`` on the target projections: dense, or truncated SVD of rank ``rank``.

    Returns the diff and a report with the fraction of Frobenius energy kept per module and overall,
    and under ``outside`` every other parameter the fine-tune changed (embeddings, norms, biases:
    a diff does not hold them, so DIT cannot read them) with its relative change.

    >>> import copy, torch
    >>> base, _ = load_model(str(tiny_model_dir))
    >>> tuned = copy.deepcopy(base)
    >>> with torch.no_grad():
    ...     tuned.model.layers[0].mlp.up_proj.weight += 0.01  # a rank-1 change
    >>> diff, report = diff_from_finetune(base, tuned, rank=1)
    >>> diff.rank, round(report["energy_kept"], 4), report["outside"]
    (1, 1.0, {})
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
    meta = {"source_format": "full-finetune", **models.model_identity(base)}
    diff = WeightDiff({}, dense, 1.0, meta)
    if rank is None:
        report = {"energy_kept": 1.0, "per_module": dict.fromkeys(dense, 1.0)}
    else:
        diff, report = svd_truncate(diff, rank)
    report["outside"] = changed_outside(base, finetuned, names)
    return diff, report


OUTSIDE_TOLERANCE = 1e-4  # relative change below which a parameter counts as the base's


@torch.no_grad()
def changed_outside(base: nn.Module, finetuned: nn.Module, modules: Sequence[str]) -> dict:
    """``{parameter: |P_ft - P_base| / |P_base|}`` for the parameters outside the weights of
    ``modules`` that the fine-tune changed by more than `OUTSIDE_TOLERANCE`, largest first."""
    skip = {f"{m}.weight" for m in modules}
    out = {}
    for name, p in finetuned.named_parameters(remove_duplicate=False):
        if name in skip:
            continue
        owner, _, leaf = name.rpartition(".")
        try:
            q = getattr(base.get_submodule(owner), leaf)
        except AttributeError:
            continue  # a parameter the base lacks: the shape check above speaks for the weights
        if q is None or q.shape != p.shape:
            continue
        q = q.detach().float()
        change = float((p.detach().float() - q).norm() / q.norm().clamp_min(1e-12))
        if change > OUTSIDE_TOLERANCE:
            out[name] = change
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def describe_outside(outside: dict, limit: int = 3) -> str:
    """One line on what a checkpoint changed outside its diff, for a log or an audit row."""
    top = ", ".join(f"{n} {v:.1%}" for n, v in list(outside.items())[:limit])
    more = f" and {len(outside) - limit} more" if len(outside) > limit else ""
    return (
        f"changed {len(outside)} parameter(s) a diff does not hold ({top}{more}): DIT reads "
        "only the projections' change"
    )


def subtract(
    checkpoint: str | Path,
    base: str | nn.Module,
    rank: int | None = None,
    align: bool = False,
) -> tuple[WeightDiff, dict]:
    """Load ``checkpoint`` and ``base`` (a name, or a model already loaded; seconds to minutes
    each) and ``diff_from_finetune`` them. ``align`` first brings the checkpoint back into the
    base's basis (`ditkit.symmetry.align`: it may have been permuted, rescaled or rotated); the report
    then holds ``alignment``."""
    base_model = base if isinstance(base, nn.Module) else models.load_model(base)[0]
    ft_model, _ = models.load_model(str(checkpoint))
    found = None
    if align:
        from ..symmetry import align as to_base  # scipy: only alignment needs it

        found = to_base(ft_model, base_model)
        found = {k: v for k, v in found.items() if k != "layers"}
    diff, report = diff_from_finetune(base_model, ft_model, rank)
    if report["outside"]:
        log.warning("%s %s", checkpoint, describe_outside(report["outside"]))
    if found is not None:
        report["alignment"] = found
        diff.meta["aligned"] = True
    return diff, report


def svd_truncate(diff: WeightDiff, rank: int) -> tuple[WeightDiff, dict]:
    """Truncate every module's dense change to rank ``rank``; report the energy kept."""
    lowrank, kept, total, total_kept = {}, {}, 0.0, 0.0
    for name in diff.modules:
        u, s, vh = torch.linalg.svd(diff.delta_weight(name), full_matrices=False)
        k = min(rank, s.numel())
        root = s[:k].sqrt()
        # D ~= U_k S_k V_k^T = B A with B = U_k sqrt(S_k), A = sqrt(S_k) V_k^T; alpha = rank
        # makes the stored scale alpha / r equal 1, so B A is the delta itself.
        # If a module is smaller than ``rank``, shrink B so that (rank / k) B A is still D.
        b_or = (u[:, :k] * root) * (k / rank)
        lowrank[name] = ((root[:, None] * vh[:k]).contiguous(), b_or.contiguous())
        e, p = float(s.pow(2).sum()), float(s[:k].pow(2).sum())
        kept[name] = p / e if e > 0 else 1.0
        total, total_kept = total + e, total_kept + p
    meta = {**diff.meta, "svd_rank": rank}
    report = {"energy_kept": total_kept / total if total > 0 else 1.0, "per_module": kept}
    return WeightDiff(lowrank, {}, float(rank), meta), report


def _load(path: Path) -> list[WeightDiff]:
    raise DiffFormatError(
        f"{path} is a full model checkpoint; build a diff from it with "
        "`ditkit diff convert CHECKPOINT OUT --base BASE_MODEL [--rank K]`"
    )


FORMAT = Format(
    name="checkpoint",
    describes="a checkpoint folder",
    detect=lambda path: path.is_dir() and (path / "config.json").exists(),
    load=_load,
    folder_marker="config.json (full checkpoint)",
)
