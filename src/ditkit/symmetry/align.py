"""Undo weight symmetries: bring a fine-tuned checkpoint back into its base model's basis.

A checkpoint transformed by `ditkit.symmetry.attack` computes what the fine-tune computed, but its
``W - W_base`` is large and meaningless. `align` recovers each transform from the weights and
applies its inverse, in place, so that the diff is the fine-tune's again:

- residual rotation: orthogonal Procrustes between the two input embeddings (a fine-tune of the
  projections leaves them equal, so the rotation comes back exactly; rows a fine-tune of the
  embedding changed are dropped from the fit by their residual);
- folded norms: each RMSNorm set back to the base's weight, its readers' columns divided by the
  ratio; where the fine-tune changed a norm too, that change is fitted back out of the readers
  (one least-squares factor per input column, shared by every reader of the norm);
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

from ..errors import DiffMismatchError
from .fit import column_scale, diff_target, gate_rank, module_ranks, no_bias
from .shapes import (
    Shape,
    layer_norm_readers,
    norm_readers,
    norm_scale,
    rotate,
    set_scale,
    shape_of,
    untie,
)

log = logging.getLogger(__name__)

# The fitted modules of a layer (the gate is only permuted, and read for the MLP norm's factor).
_FITTED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The readers of a layer's two norms, in the order of `shapes.layer_norm_readers`.
_READERS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
ROTATION_TRIM = 3.0  # embedding rows with a residual above this many medians leave the fit


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

    >>> import copy, torch
    >>> base, _ = load_model(str(tiny_model_dir))
    >>> tuned = copy.deepcopy(base)
    >>> with torch.no_grad():
    ...     tuned.model.layers[1].mlp.down_proj.weight += 0.02  # the fine-tune
    >>> attack(tuned, ["permute_mlp", "scale_mlp"], seed=0)  # hidden from a weight reader
    >>> report = align(tuned, base, rank=1)
    >>> diff, _ = diff_from_finetune(base, tuned, rank=1)
    >>> change = diff.delta_weight("model.layers.1.mlp.down_proj")
    >>> torch.allclose(change, torch.full_like(change, 0.02), atol=1e-4)
    True
    """
    start = time.time()
    sm, sb = shape_of(model), shape_of(base)
    _check_same(model, base, sm, sb)
    report: dict = {"rotated": _undo_rotation(model, base, sm)}
    folded = _undo_folding(model, base, sm, sb)
    report["unfolded"] = len(folded)
    layers = []
    for lm, lb in zip(sm.layers, sb.layers):
        layers.append(_align_layer(lm, lb, sm, sb, rank, iters, tol, folded))
    final = _refit_final_norm(model, base, sm) if id(model.model.norm) in folded else 0.0
    _retie(model, base)
    report["layers"] = layers
    # The largest change of a norm's scale that was fitted back (0: the norms were the base's).
    report["norm_change"] = max([final, *(r["norm_change"] for r in layers)])
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
    q = _procrustes(
        _f64(base.get_input_embeddings().weight), _f64(model.get_input_embeddings().weight)
    )
    if torch.linalg.matrix_norm(q - torch.eye(len(q), dtype=q.dtype)) < 1e-3:
        return False
    rotate(model, shape, q.T)
    return True


def _procrustes(e_b: torch.Tensor, e_m: torch.Tensor, rounds: int = 5) -> torch.Tensor:
    """The orthogonal ``q`` ``[d_model, d_model]`` with ``e_m ~= e_b q`` (``[vocab, d_model]``
    each), fitted on the rows the fine-tune left alone: rows it changed are dropped, round by
    round, by their residual (least squares over every row would let them tilt ``q``)."""
    keep = torch.ones(len(e_b), dtype=torch.bool)
    floor = 1e-9 * float(e_b.norm(dim=1).mean())
    for _ in range(rounds):
        u, _, vh = torch.linalg.svd(e_b[keep].T @ e_m[keep])
        q = u @ vh
        residual = (e_m - e_b @ q).norm(dim=1)  # [vocab]
        new = residual <= ROTATION_TRIM * residual.median() + floor
        if torch.equal(new, keep) or int(new.sum()) < e_b.shape[1]:
            break
        keep = new
    return q


@torch.no_grad()
def _undo_folding(model: nn.Module, base: nn.Module, sm: Shape, sb: Shape) -> set[int]:
    """Set every norm back to the base's weight, its readers' columns times the ratio; returns
    the ids of the norms that moved (their own change, if any, is fitted later)."""
    changed = set()
    for (nm, readers), (nb, _) in zip(norm_readers(model, sm), norm_readers(base, sb)):
        g_m, g_b = norm_scale(nm, sm), norm_scale(nb, sb)
        if torch.allclose(g_m, g_b, rtol=1e-6, atol=1e-9):
            continue
        if model.get_output_embeddings() in readers:
            untie(model)  # the head alone reads the final norm; `_retie` ties it back
            readers = [model.get_output_embeddings()]
        ratio = g_m / g_b  # [d_model]
        for lin in readers:
            lin.weight.copy_(lin.weight.double() * ratio.double())
        set_scale(nm, g_b, sm)
        changed.add(id(nm))
    return changed


@torch.no_grad()
def _refit_final_norm(model: nn.Module, base: nn.Module, shape: Shape) -> float:
    """Move the final norm's own change back out of the output embedding (folding put it there):
    one least-squares factor per column of the head against the base's head. Returns the
    largest change of the norm's scale."""
    head = model.get_output_embeddings()
    h_m, h_b = _f64(head.weight), _f64(base.get_output_embeddings().weight)  # [vocab, d_model]
    r = column_scale([(h_b, h_m)])  # [d_model]
    head.weight.copy_(h_m / r)
    norm = model.model.norm
    set_scale(norm, norm_scale(norm, shape).double() * r, shape)
    return float((r - 1).abs().max())


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
    for name in _FITTED:
        lin = _linear(layer, name)
        w = _f64(lin.weight)
        if lin.bias is not None:
            if name not in ("q_proj", "k_proj", "v_proj"):
                raise DiffMismatchError(f"{name} has a bias: alignment does not handle that yet")
            w = torch.cat([w, _f64(lin.bias)[:, None]], 1)
        out[name] = w
    return out


def _linear(layer: nn.Module, name: str) -> nn.Linear:
    return getattr(
        layer.mlp if name in ("gate_proj", "up_proj", "down_proj") else layer.self_attn, name
    )


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


@torch.no_grad()
def _undo_qk_norms(am: nn.Module, ab: nn.Module, sm: Shape, sb: Shape) -> None:
    """Where heads are normalised, `scale_qk` moved its scale into the query and key norms, one
    factor per RoPE pair (dimensions i and i + head_dim / 2). Attention is unchanged by any such
    factor, so the query norm takes the one that brings it closest to the base's and the key norm
    its inverse: the base's norms again, or the fine-tune's own change of them where it made one."""
    g_q, g_k = norm_scale(am.q_norm, sm).double(), norm_scale(am.k_norm, sm).double()
    g_qb = norm_scale(ab.q_norm, sb).double()  # [head_dim]
    half = len(g_q) // 2
    num, den = g_q * g_qb, g_q * g_q
    c = (num[:half] + num[half:]) / (den[:half] + den[half:]).clamp_min(1e-30)
    c = torch.cat([c, c])
    set_scale(am.q_norm, g_q * c, sm)
    set_scale(am.k_norm, g_k / c, sm)


def _divide_columns(w: dict, factors: list, biased: set) -> dict:
    """``w`` with each norm's readers' input columns divided by that norm's factor (None: 1)."""
    out = dict(w)
    for r, names in zip(factors, _READERS):
        for n in names if r is not None else ():
            out[n] = torch.cat([w[n][:, :-1] / r, w[n][:, -1:]], 1) if n in biased else w[n] / r
    return out


def _low_rank_targets(fitted, b, ranks, biased, bases, gate_fixed: bool) -> dict:
    """Per module, the base plus the diff as its rank allows (``bases`` kept for the next round);
    the gate only permuted (``gate_fixed``) is fitted against nothing but the base."""
    t = {}
    for n in b:
        if n == "gate_proj" and gate_fixed:
            t[n] = b[n]
            continue
        low, bases[n] = diff_target(fitted[n] - b[n], ranks[n], n in biased, bases[n])
        t[n] = b[n] + low
    return t


@torch.no_grad()
def _align_layer(
    lm: nn.Module, lb: nn.Module, sm: Shape, sb: Shape, rank, iters: int, tol: float, folded
) -> dict:
    heads, units = _permute(lm, lb, sm)
    qk_normed = getattr(lm.self_attn, "q_norm", None) is not None
    if qk_normed:
        _undo_qk_norms(lm.self_attn, lb.self_attn, sm, sb)
    w, b = _weights(lm), _weights(lb)
    biased = {n for n in _FITTED if _linear(lm, n).bias is not None}
    norms = [norm for norm, _ in layer_norm_readers(lm)]
    # A folded norm may carry the fine-tune's own change of it: one factor per column of its
    # readers, fitted with the rest (None: the norm was the base's, nothing to fit). A base whose
    # norms are exactly 1 hides a fold; trained models' norms are not 1.
    width = w["q_proj"].shape[1] - ("q_proj" in biased)
    factors = [torch.ones(width, dtype=torch.float64) if id(n) in folded else None for n in norms]
    fits_norms = any(f is not None for f in factors)

    def fit(t: dict) -> dict:  # the attacked weights with every fitted transform undone
        return _undo(_divide_columns(w, factors, biased), t, sm, not qk_normed)

    def refit(f: dict, t: dict) -> None:  # the norms' factors that best map ``f`` onto ``t``
        for i, names in enumerate(_READERS):
            if factors[i] is not None:
                pairs = [(no_bias(f[n], n in biased), no_bias(t[n], n in biased)) for n in names]
                factors[i] = factors[i] / column_scale(pairs)

    fitted, it = fit(b), 1
    if fits_norms:
        refit(fitted, b)
        fitted = fit(b)
    if rank == "auto" and factors[1] is not None:
        # The MLP norm's factor scales every gate column, which no low rank holds: fit the
        # gate's rank and that factor together (the gate is only permuted, so this is exact).
        k, factors[1] = gate_rank(w["gate_proj"], b["gate_proj"])
        fitted = fit(b)
        ranks = dict.fromkeys(b, k)
    else:
        ranks = {} if rank is None else module_ranks(fitted, b, biased, rank)
    moved, bases = float("inf"), dict.fromkeys(b)
    while (ranks or fits_norms) and it < iters and moved >= tol:
        # Fit again against the base plus the diff as its rank allows: the part of the diff
        # that looked like the transform is not low rank, so each round gives it back.
        t = _low_rank_targets(fitted, b, ranks, biased, bases, factors[1] is None) if ranks else b
        refit(fitted, t)
        new = fit(t)
        moved = max(float((new[n] - fitted[n]).abs().max()) for n in b)
        fitted, it = new, it + 1
    _write(lm, fitted)
    for norm, r in zip(norms, factors):
        if r is not None:
            set_scale(norm, norm_scale(norm, sm).double() * r, sm)
    change = max((float((r - 1).abs().max()) for r in factors if r is not None), default=0.0)
    return {
        "heads_moved": heads, "units_moved": units, "iterations": it, "ranks": ranks,
        "norm_change": change,
    }  # fmt: skip


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
