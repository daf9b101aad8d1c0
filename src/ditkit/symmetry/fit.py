"""The fits inside alignment's refinement: a diff's best low-rank form (warm-started subspace
iteration), its rank ("auto": read off the gate projection, which permutations alone undo), and
the per-column least-squares scale a folded norm leaves in its readers."""

from __future__ import annotations

import torch

AUTO_RANK_CUT = 0.1  # "auto": singular values above this fraction of the largest
MAX_AUTO_RANK = 32


def lowrank(
    d: torch.Tensor, rank: int, basis: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``d``'s best rank-``rank`` approximation, and the basis to pass next time.

    Where ``d`` is much larger than the rank: subspace iteration on ``rank + 8`` columns, four
    rounds from a seeded random start, one from ``basis`` (the refinement's diff moves little from
    round to round, so the last basis is nearly right: five times fewer products than a cold start).
    """
    if rank == 0:
        return torch.zeros_like(d), None
    if min(d.shape) <= 4 * (rank + 8):
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        return (u[:, :rank] * s[:rank]) @ vh[:rank], None
    v = basis
    if v is None:
        gen = torch.Generator().manual_seed(0)
        v = torch.randn(d.shape[1], rank + 8, generator=gen, dtype=d.dtype)  # [in, k]
    for _ in range(4 if basis is None else 1):
        q, _ = torch.linalg.qr(d @ v)  # [out, k]
        v, _ = torch.linalg.qr(d.T @ q)  # [in, k]
    u, s, vh = torch.linalg.svd(d @ v, full_matrices=False)  # d ~= (d v) v^T
    return (u[:, :rank] * s[:rank]) @ (vh[:rank] @ v.T), v


def module_ranks(fitted: dict, b: dict, biased: set, rank) -> dict[str, int]:
    """The diff's rank per module: ``rank``, or for "auto" the rank of the gate projection's
    change (permutations alone undo it, so it is exact: a LoRA-style fine-tune has one rank
    everywhere), or where the gate did not change, each module's own estimate."""
    if rank != "auto":
        return dict.fromkeys(b, int(rank))
    gate = fitted["gate_proj"] - b["gate_proj"]
    if gate.abs().max() > 1e-9 * b["gate_proj"].abs().max():
        return dict.fromkeys(b, auto_rank(gate))
    return {n: auto_rank(no_bias(fitted[n] - b[n], n in biased)) for n in b}


def diff_target(d: torch.Tensor, rank: int, biased: bool, basis=None):
    """The diff as its rank allows, and `lowrank`'s basis; a bias column stays the base's
    (diffs change weights)."""
    if not biased:
        return lowrank(d, rank, basis)
    low, basis = lowrank(d[:, :-1], rank, basis)
    return torch.cat([low, torch.zeros_like(d[:, -1:])], 1), basis


def gate_rank(g_m: torch.Tensor, g_b: torch.Tensor, rounds: int = 100) -> tuple[int, torch.Tensor]:
    """The smallest ``k`` with ``g_m = (g_b + rank-k change) diag(r)``, and ``r`` ``[in]``: for
    each ``k`` up to the singular-value guess, alternate the column factor and the truncation."""
    r = column_scale([(g_b, g_m)])
    guess = auto_rank(g_m / r - g_b)
    for k in range(1, guess + 1):
        r_k, basis = torch.ones_like(r), None
        for _ in range(rounds):
            f = g_m / r_k
            low, basis = lowrank(f - g_b, k, basis)
            c = column_scale([(f, g_b + low)])
            r_k = r_k / c
            if float((c - 1).abs().max()) < 1e-12:
                break
        f = g_m / r_k
        if float((f - g_b - low).norm()) <= 1e-6 * float((f - g_b).norm()):
            return k, r_k
    return guess, r


def auto_rank(d: torch.Tensor) -> int:
    s = torch.linalg.svdvals(d)
    if s[0] == 0:
        return 0
    return min(int((s > AUTO_RANK_CUT * s[0]).sum()), MAX_AUTO_RANK)


def column_scale(pairs) -> torch.Tensor:
    """Per column ``j``, the ``c_j`` that best maps ``x[:, j]`` onto ``y[:, j]`` over all the
    ``(x, y)`` pairs together (least squares: ``sum <x_j, y_j> / sum |x_j|^2``)."""
    num = den = 0.0
    for x, y in pairs:
        num, den = num + (x * y).sum(0), den + (x * x).sum(0)
    return num / den.clamp_min(1e-30)


def no_bias(w: torch.Tensor, biased: bool) -> torch.Tensor:
    """A fitted weight without its bias column (`_weights` appends one to q, k, v in Qwen2)."""
    return w[:, :-1] if biased else w
