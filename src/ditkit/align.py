"""Undo weight symmetries: bring a fine-tuned checkpoint back into its base model's basis.

A checkpoint transformed by `ditkit.attack` computes what the fine-tune computed, but its
``W - W_base`` is large and meaningless. `align` recovers each transform from the weights and
applies its inverse, in place, so that the diff is the fine-tune's again:

- residual rotation: orthogonal Procrustes between the two input embeddings (a fine-tune of the
  projections leaves them equal, so the rotation comes back exactly);
- folded norms: each RMSNorm set back to the base's weight, its readers' columns divided by the
  ratio (exact when the fine-tune left the norms alone);
- head and MLP-unit permutations: an assignment on the cosine similarity of key heads, then
  query heads within each group, and of gate rows (scales do not change a cosine);
- query/key scales, value/output mixing and MLP-unit scales: least squares against the base
  (a Sylvester equation for the mixing matrices).

A least-squares fit also absorbs the part of the diff that looks like the transform (for an
MLP unit, the diff's component along the unit's own weights). With ``rank`` (the diff's rank;
"auto" guesses it) the fit is repeated against ``base + (the diff truncated to that rank)`` until
it stops moving: a low-rank diff is then recovered to float precision. "auto" takes the rank of
the gate projection's change, which the permutations alone recover exactly.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from scipy.linalg import solve_sylvester
from scipy.optimize import linear_sum_assignment
from torch import nn

from .attack import Shape, _norm_scale, _set_scale, norm_readers, rotate, shape_of
from .errors import DiffMismatchError

log = logging.getLogger(__name__)

# The continuous fits' modules, per layer: (attribute path, weight).
_CONTINUOUS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
AUTO_RANK_CUT = 0.1  # "auto": singular values above this fraction of the largest
MAX_AUTO_RANK = 32


def align(
    model: nn.Module,
    base: nn.Module,
    rank: int | str | None = "auto",
    iters: int = 200,
    tol: float = 1e-9,
) -> dict:
    """Bring ``model`` (a fine-tune of ``base``, maybe transformed) into ``base``'s basis, in place.

    Returns what was found: ``rotated``, ``unfolded`` norms, permuted heads and units per layer,
    the largest fitted scale or mixing change, the rank used and the iterations, and seconds.
    """
    start = time.time()
    sm, sb = shape_of(model), shape_of(base)
    _check_same(model, base, sm, sb)
    report: dict = {"rotated": _undo_rotation(model, base, sm)}
    report["unfolded"] = _undo_folding(model, base, sm, sb)
    layers = []
    for lm, lb in zip(sm.layers, sb.layers):
        layers.append(_align_layer(lm, lb, sm, sb, rank, iters, tol))
    report["layers"] = layers
    report["permuted_heads"] = sum(r["heads_moved"] for r in layers)
    report["permuted_units"] = sum(r["units_moved"] for r in layers)
    report["iterations"] = max(r["iterations"] for r in layers)
    report["seconds"] = round(time.time() - start, 2)
    return report


def _check_same(model: nn.Module, base: nn.Module, sm: Shape, sb: Shape) -> None:
    ours = (len(sm.layers), sm.n_heads, sm.n_kv, sm.head_dim)
    theirs = (len(sb.layers), sb.n_heads, sb.n_kv, sb.head_dim)
    e_m, e_b = model.get_input_embeddings().weight, base.get_input_embeddings().weight
    if ours != theirs or e_m.shape != e_b.shape:
        raise DiffMismatchError(
            f"the checkpoint (layers, heads, kv heads, head size {ours}, embedding "
            f"{tuple(e_m.shape)}) is not shaped like the base ({theirs}, {tuple(e_b.shape)}): "
            "it was not fine-tuned from this base model; pass the right --base"
        )


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


@torch.no_grad()
def _undo_rotation(model: nn.Module, base: nn.Module, shape: Shape) -> bool:
    e_m = _f64(model.get_input_embeddings().weight)  # [vocab, d_model]
    e_b = _f64(base.get_input_embeddings().weight)
    u, _, vh = torch.linalg.svd(e_b.T @ e_m)
    q = u @ vh  # e_m ~= e_b @ q
    if torch.linalg.matrix_norm(q - torch.eye(len(q), dtype=q.dtype)) < 1e-3:
        return False
    rotate(model, shape, q.T)
    return True


@torch.no_grad()
def _undo_folding(model: nn.Module, base: nn.Module, sm: Shape, sb: Shape) -> int:
    changed = 0
    for (nm, readers), (nb, _) in zip(norm_readers(model, sm), norm_readers(base, sb)):
        g_m, g_b = _norm_scale(nm, sm), _norm_scale(nb, sb)
        if torch.allclose(g_m, g_b, rtol=1e-6, atol=1e-9):
            continue
        ratio = g_m / g_b  # [d_model]
        for lin in readers:
            lin.weight.copy_(lin.weight.double() * ratio.double())
        _set_scale(nm, g_b, sm)
        changed += 1
    _retie(model, base)
    return changed


def _retie(model: nn.Module, base: nn.Module) -> None:
    """Tie the output embedding again where the base ties it and the weights agree."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    base_tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    if base_tied and head.weight is not emb.weight and torch.allclose(head.weight, emb.weight):
        head.weight = emb.weight
        for cfg in (model.config, getattr(model.config, "text_config", None)):
            if cfg is not None:
                cfg.tie_word_embeddings = True


# ---------------------------------------------------------------- permutations


def _match(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """For each row of ``a``, the row of ``b`` it is (up to scale) closest to: a permutation."""
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-30)
    sim = (a @ b.T).abs().numpy()
    best = sim.argmax(1)
    if len(set(best.tolist())) == len(best):  # unambiguous: no assignment needed
        return best
    return linear_sum_assignment(-sim)[1]


def _blocks(w: torch.Tensor, n: int) -> torch.Tensor:
    return w.reshape(n, -1)  # [n heads, head_dim * in]


@torch.no_grad()
def _permute(lm: nn.Module, lb: nn.Module, shape: Shape) -> tuple[int, int]:
    """Reorder ``lm``'s heads and MLP units to match ``lb``'s; returns how many moved."""
    am, ab, hd = lm.self_attn, lb.self_attn, shape.head_dim
    group = shape.n_heads // shape.n_kv
    kv_of = _match(
        _blocks(_f64(am.k_proj.weight), shape.n_kv), _blocks(_f64(ab.k_proj.weight), shape.n_kv)
    )
    kv_order = torch.as_tensor(np.argsort(kv_of))  # base kv head h <- model kv head kv_order[h]
    q_m, q_b = (
        _blocks(_f64(am.q_proj.weight), shape.n_heads),
        _blocks(_f64(ab.q_proj.weight), shape.n_heads),
    )
    q_order = []
    for h, j in enumerate(kv_order.tolist()):
        mine = list(range(j * group, (j + 1) * group))
        of = _match(q_m[mine], q_b[h * group : (h + 1) * group])
        q_order += [mine[i] for i in np.argsort(of)]
    q_order = torch.as_tensor(q_order)
    q_rows = (q_order[:, None] * hd + torch.arange(hd)).reshape(-1)
    kv_rows = (kv_order[:, None] * hd + torch.arange(hd)).reshape(-1)
    _reorder(am.q_proj, q_rows, out=True)
    _reorder(am.k_proj, kv_rows, out=True)
    _reorder(am.v_proj, kv_rows, out=True)
    _reorder(am.o_proj, q_rows, out=False)
    heads = int((q_order != torch.arange(shape.n_heads)).sum())
    mm, mb = lm.mlp, lb.mlp
    units = torch.as_tensor(
        np.argsort(_match(_f64(mm.gate_proj.weight), _f64(mb.gate_proj.weight)))
    )
    _reorder(mm.gate_proj, units, out=True)
    _reorder(mm.up_proj, units, out=True)
    _reorder(mm.down_proj, units, out=False)
    return heads, int((units != torch.arange(len(units))).sum())


def _reorder(lin: nn.Linear, index: torch.Tensor, out: bool) -> None:
    if out:
        lin.weight.copy_(lin.weight[index])
        if lin.bias is not None:
            lin.bias.copy_(lin.bias[index])
    else:
        lin.weight.copy_(lin.weight[:, index])


# ---------------------------------------------------------------- continuous fits


def _weights(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The continuous fits' weights of a layer in float64, the biases of q, k and v (Qwen2) as
    an extra column: they scale and mix with their rows."""
    out = {}
    for name in _CONTINUOUS:
        lin = _linear(layer, name)
        w = _f64(lin.weight)
        if lin.bias is not None:
            if name not in ("q_proj", "k_proj", "v_proj"):
                raise DiffMismatchError(f"{name} has a bias: alignment does not handle that yet")
            w = torch.cat([w, _f64(lin.bias)[:, None]], 1)
        out[name] = w
    return out


def _linear(layer: nn.Module, name: str) -> nn.Linear:
    return getattr(layer.mlp if name.endswith(("up_proj", "down_proj")) else layer.self_attn, name)


def _undo(w: dict[str, torch.Tensor], t: dict[str, torch.Tensor], shape: Shape, qk: bool) -> dict:
    """The attacked weights ``w`` with the scales and mixings fitted against ``t`` undone
    (query/key scales only with ``qk``: normalised heads keep theirs in the norms)."""
    out = dict(w)
    if qk:
        out.update(_undo_qk(w, t, shape))
    out.update(_undo_vo(w, t, shape))
    # MLP unit scales: up' = s up, down' = down / s.
    up, down = w["up_proj"], w["down_proj"]
    upt, downt = t["up_proj"], t["down_proj"]
    s = ((up * upt).sum(1) + (down * downt).sum(0)) / ((upt * upt).sum(1) + (down * down).sum(0))
    out["up_proj"], out["down_proj"] = up / s[:, None], down * s[None, :]
    return out


def _undo_qk(w: dict, t: dict, shape: Shape) -> dict:
    """Query/key scale per kv head: k' = s k, q' = q / s."""
    hd, n_kv = shape.head_dim, shape.n_kv
    group = shape.n_heads // n_kv
    k, q = w["k_proj"].reshape(n_kv, hd, -1), w["q_proj"].reshape(n_kv, group * hd, -1)
    kt, qt = t["k_proj"].reshape(n_kv, hd, -1), t["q_proj"].reshape(n_kv, group * hd, -1)
    s = ((k * kt).sum((1, 2)) + (q * qt).sum((1, 2))) / (
        (kt * kt).sum((1, 2)) + (q * q).sum((1, 2))
    )
    return {
        "k_proj": (k / s[:, None, None]).reshape(w["k_proj"].shape),
        "q_proj": (q * s[:, None, None]).reshape(w["q_proj"].shape),
    }


def _undo_vo(w: dict, t: dict, shape: Shape) -> dict:
    """Value/output mixing per kv head: v' = M v, o' = o M^-1; least squares is B M + M A = C."""
    hd, n_kv = shape.head_dim, shape.n_kv
    group = shape.n_heads // n_kv
    v, vt = w["v_proj"].reshape(n_kv, hd, -1), t["v_proj"].reshape(n_kv, hd, -1)
    o, ot = w["o_proj"], t["o_proj"]
    v_new, o_new = torch.empty_like(v), o.clone()
    for h in range(n_kv):
        cols = slice(h * group * hd, (h + 1) * group * hd)
        o_h = o[:, cols].reshape(o.shape[0], group, hd).transpose(0, 1)  # [group, d, hd]
        ot_h = ot[:, cols].reshape(o.shape[0], group, hd).transpose(0, 1)
        a = (vt[h] @ vt[h].T).numpy()
        b = (o_h.transpose(1, 2) @ o_h).sum(0).numpy()
        c = (v[h] @ vt[h].T + (o_h.transpose(1, 2) @ ot_h).sum(0)).numpy()
        m = torch.from_numpy(solve_sylvester(b, a, c))
        v_new[h] = torch.linalg.solve(m, v[h])
        o_new[:, cols] = (o_h @ m).transpose(0, 1).reshape(o.shape[0], group * hd)
    return {"v_proj": v_new.reshape(w["v_proj"].shape), "o_proj": o_new}


def _lowrank(d: torch.Tensor, rank: int) -> torch.Tensor:
    """``d``'s best rank-``rank`` approximation (randomised SVD where ``d`` is much larger)."""
    if rank == 0:
        return torch.zeros_like(d)
    if min(d.shape) > 4 * (rank + 8):
        u, s, v = torch.svd_lowrank(d, q=rank + 8, niter=4)
        return (u[:, :rank] * s[:rank]) @ v[:, :rank].T
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def _ranks(lm, lb, fitted: dict, b: dict, biased: set, rank) -> dict[str, int]:
    """The diff's rank per module: ``rank``, or for "auto" the rank of the gate projection's
    change (permutations alone undo it, so it is exact: a LoRA-style fine-tune has one rank
    everywhere), or where the gate did not change, each module's own estimate."""
    if rank != "auto":
        return dict.fromkeys(b, int(rank))
    gate = _f64(lm.mlp.gate_proj.weight) - _f64(lb.mlp.gate_proj.weight)
    if gate.abs().max() > 0:
        return dict.fromkeys(b, _auto_rank(gate))
    return {n: _auto_rank((fitted[n] - b[n])[:, : -1 if n in biased else None]) for n in b}


def _diff_target(d: torch.Tensor, rank: int, biased: bool) -> torch.Tensor:
    """The diff as its rank allows; a bias column stays the base's (diffs change weights)."""
    if not biased:
        return _lowrank(d, rank)
    return torch.cat([_lowrank(d[:, :-1], rank), torch.zeros_like(d[:, -1:])], 1)


def _auto_rank(d: torch.Tensor) -> int:
    s = torch.linalg.svdvals(d)
    if s[0] == 0:
        return 0
    return min(int((s > AUTO_RANK_CUT * s[0]).sum()), MAX_AUTO_RANK)


@torch.no_grad()
def _align_layer(
    lm: nn.Module, lb: nn.Module, sm: Shape, sb: Shape, rank, iters: int, tol: float
) -> dict:
    heads, units = _permute(lm, lb, sm)
    qk_normed = getattr(lm.self_attn, "q_norm", None) is not None
    if qk_normed:  # the scale moved into the query/key norms: they go back to the base's
        for name in ("q_norm", "k_norm"):
            _set_scale(
                getattr(lm.self_attn, name), _norm_scale(getattr(lb.self_attn, name), sb), sm
            )
    w, b = _weights(lm), _weights(lb)
    biased = {n for n in _CONTINUOUS if _linear(lm, n).bias is not None}
    fitted, it = _undo(w, b, sm, not qk_normed), 1
    ranks: dict[str, int] = {}
    if rank is not None:
        ranks = _ranks(lm, lb, fitted, b, biased, rank)
        moved = float("inf")
        while it < iters and moved >= tol:
            # Fit again against the base plus the diff as its rank allows: the part of the diff
            # that looked like the transform is not low rank, so each round gives it back.
            t = {n: b[n] + _diff_target(fitted[n] - b[n], ranks[n], n in biased) for n in b}
            new = _undo(w, t, sm, not qk_normed)
            moved = max(float((new[n] - fitted[n]).abs().max()) for n in b)
            fitted, it = new, it + 1
    _write(lm, fitted)
    return {"heads_moved": heads, "units_moved": units, "iterations": it, "ranks": ranks}


def _write(layer: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    for name, w in weights.items():
        lin = _linear(layer, name)
        if lin.bias is not None:
            lin.bias.copy_(w[:, -1])
            w = w[:, :-1]
        lin.weight.copy_(w)


def describe_alignment(report: dict) -> str:
    """One line for a log or a CLI: what `align` found."""
    parts = [
        "residual rotation undone" if report["rotated"] else "no residual rotation",
        f"{report['unfolded']} norm(s) unfolded",
        f"{report['permuted_heads']} head(s) and {report['permuted_units']} MLP unit(s) reordered",
        f"{report['iterations']} fit iteration(s)",
        f"{report['seconds']} s",
    ]
    return ", ".join(parts)
