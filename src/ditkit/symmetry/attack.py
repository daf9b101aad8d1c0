"""Exact weight symmetries of Llama-family decoders: red-teaming for weight-reading methods.

Each transform below changes the weights of a Llama, Mistral, Qwen2/3 or Gemma2/3 model in
transformers but leaves every output the same (up to float rounding). Applied to a fine-tuned
checkpoint, they make ``W_ft - W_base`` large and meaningless, so a reader trained in the base
model's basis (DIT, the weight lens) sees noise; `ditkit audit` flags such checkpoints.

Row vectors throughout, as in ``nn.Linear``: a layer computes ``y = x @ W.T + b`` with ``W``
``[out, in]``; the residual stream ``h`` is ``[d_model]``.

- ``permute_mlp``: reorder the MLP's hidden units (rows of gate/up, columns of down).
- ``scale_mlp``: multiply each hidden unit's up row by ``s`` and its down column by ``1/s``
  (``act(gate x) * up x`` is linear in ``up``).
- ``permute_heads``: reorder the key-value heads, and the query heads within each group.
- ``scale_qk``: multiply a key head by ``s`` and its group's query heads by ``1/s`` (RoPE is
  linear, so ``q . k`` is unchanged); where query and key heads are normalised (Qwen3, Gemma3),
  the two norms' weights instead, by ``1/c`` and ``c`` equal on the halves RoPE pairs.
- ``mix_vo``: replace a value head by ``M v`` and the matching output-projection columns by
  ``o M^-1`` (attention mixes values linearly).
- ``fold_norms``: move each RMSNorm's weight into the projections that read its output and set
  the norm to 1 (the tied output embedding is untied when the final norm folds into it).
- ``rotate_residual``: after folding, rotate the residual stream by an orthogonal ``Q``:
  ``E -> E Q`` for the embedding, ``W -> W Q`` for every reader, ``W -> Q^T W`` for every writer
  (an RMSNorm with unit weight commutes with ``Q``: it keeps ``|h|``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import DitkitError
from .shapes import (
    Shape,
    edit_in,
    edit_out,
    norm_readers,
    norm_scale,
    rotate,
    set_scale,
    shape_of,
    untie,
)

log = logging.getLogger(__name__)

KINDS = (
    "permute_mlp",
    "scale_mlp",
    "permute_heads",
    "scale_qk",
    "mix_vo",
    "fold_norms",
    "rotate_residual",
)


# ---------------------------------------------------------------- helpers on nn.Linear


def _heads(n: int, head_dim: int, order: torch.Tensor) -> torch.Tensor:
    """Row indices that reorder ``n`` blocks of ``head_dim`` rows by ``order``."""
    return (order[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # float64: callers cast to the weights' dtype


def _log_uniform(n: int, gen: torch.Generator, spread: float = 1.0) -> torch.Tensor:
    return torch.exp((torch.rand(n, generator=gen) * 2 - 1) * spread)


# ---------------------------------------------------------------- the transforms


def permute_mlp(shape: Shape, gen: torch.Generator) -> None:
    for layer in shape.layers:
        mlp = layer.mlp
        perm = torch.randperm(mlp.up_proj.out_features, generator=gen)
        edit_out(mlp.gate_proj, lambda w, p=perm: w[p])
        edit_out(mlp.up_proj, lambda w, p=perm: w[p])
        edit_in(mlp.down_proj, lambda w, p=perm: w[p])


def scale_mlp(shape: Shape, gen: torch.Generator) -> None:
    for layer in shape.layers:
        mlp = layer.mlp
        s = _log_uniform(mlp.up_proj.out_features, gen)  # [d_mlp]
        edit_out(mlp.up_proj, lambda w, s=s: w * s[:, None])
        edit_in(mlp.down_proj, lambda w, s=s: w / s[:, None])


def permute_heads(shape: Shape, gen: torch.Generator) -> None:
    group = shape.n_heads // shape.n_kv
    for layer in shape.layers:
        attn = layer.self_attn
        kv_order = torch.randperm(shape.n_kv, generator=gen)
        q_order = torch.cat(
            [kv * group + torch.randperm(group, generator=gen) for kv in kv_order.tolist()]
        )
        q_rows = _heads(shape.n_heads, shape.head_dim, q_order)
        kv_rows = _heads(shape.n_kv, shape.head_dim, kv_order)
        edit_out(attn.q_proj, lambda w, r=q_rows: w[r])
        edit_out(attn.k_proj, lambda w, r=kv_rows: w[r])
        edit_out(attn.v_proj, lambda w, r=kv_rows: w[r])
        edit_in(attn.o_proj, lambda w, r=q_rows: w[r])


def scale_qk(shape: Shape, gen: torch.Generator) -> None:
    group = shape.n_heads // shape.n_kv
    for layer in shape.layers:
        attn = layer.self_attn
        if getattr(attn, "q_norm", None) is not None:
            # Query and key heads are normalised (Qwen3, Gemma3): scale the norms' weights
            # instead, equally on the two halves that RoPE rotates together.
            c = _log_uniform(shape.head_dim // 2, gen).repeat(2)  # [head_dim]
            set_scale(attn.q_norm, norm_scale(attn.q_norm, shape) / c, shape)
            set_scale(attn.k_norm, norm_scale(attn.k_norm, shape) * c, shape)
            continue
        s_kv = _log_uniform(shape.n_kv, gen)  # [n_kv]
        k_rows = s_kv.repeat_interleave(shape.head_dim)
        q_rows = (1 / s_kv).repeat_interleave(group * shape.head_dim)
        edit_out(attn.k_proj, lambda w, s=k_rows: w * s[:, None])
        edit_out(attn.q_proj, lambda w, s=q_rows: w * s[:, None])


def mix_vo(shape: Shape, gen: torch.Generator) -> None:
    group, hd = shape.n_heads // shape.n_kv, shape.head_dim
    for layer in shape.layers:
        attn = layer.self_attn
        # One well-conditioned invertible matrix per key-value head: rotation times scales.
        mats = [
            _orthogonal(hd, gen) * _log_uniform(hd, gen, 0.5).double() for _ in range(shape.n_kv)
        ]
        m_v = torch.block_diag(*mats)  # [n_kv * hd, n_kv * hd]
        m_o = torch.block_diag(*[torch.linalg.inv(m) for m in mats for _ in range(group)])
        edit_out(attn.v_proj, lambda w, m=m_v: m @ w)
        edit_in(attn.o_proj, lambda w, m=m_o: m.T @ w)


@torch.no_grad()
def _fold(norm: nn.Module, readers: list[nn.Linear], shape: Shape) -> None:
    g = norm_scale(norm, shape)  # [d_model]
    for lin in readers:
        edit_in(lin, lambda w, g=g: w * g[:, None].to(w.dtype))
    set_scale(norm, torch.ones_like(g), shape)


@torch.no_grad()
def fold_norms(model: nn.Module, shape: Shape) -> None:
    untie(model)  # only the head takes the final norm
    for norm, readers in norm_readers(model, shape):
        _fold(norm, readers, shape)


def _unit_norms(model: nn.Module, shape: Shape) -> bool:
    return all(torch.all(norm_scale(n, shape) == 1) for n, _ in norm_readers(model, shape))


@torch.no_grad()
def rotate_residual(model: nn.Module, shape: Shape, gen: torch.Generator) -> None:
    if shape.post_norms:
        raise DitkitError(
            f"{type(model).__name__} normalises what each block writes to the residual stream "
            "(post-norms with their own weights), so a residual rotation is not a symmetry of it; "
            "leave rotate_residual out"
        )
    if not _unit_norms(model, shape):
        fold_norms(model, shape)
    emb = model.get_input_embeddings()
    rotate(model, shape, _orthogonal(emb.weight.shape[1], gen))


def _check_kinds(kinds) -> None:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise DitkitError(f"unknown transform(s) {unknown}; choose from {', '.join(KINDS)}")


def attack(model: nn.Module, kinds: tuple[str, ...] | list[str] = KINDS, seed: int = 0) -> None:
    """Apply the transforms ``kinds`` (any of `KINDS`, in that order) to ``model`` in place.

    The model computes the same function afterwards (up to float rounding); its weights do not.

    >>> import copy, torch
    >>> model, tok = load_model(str(tiny_model_dir))
    >>> hidden = copy.deepcopy(model)
    >>> attack(hidden, ["permute_mlp", "scale_mlp", "fold_norms"], seed=1)
    >>> ids = torch.tensor([[1, 5, 9, 12]])
    >>> torch.allclose(model(ids).logits, hidden(ids).logits, atol=1e-4)
    True
    >>> bool((model.model.layers[0].mlp.up_proj.weight != hidden.model.layers[0].mlp.up_proj.weight).any())
    True
    """
    _check_kinds(kinds)
    shape = shape_of(model)
    gen = torch.Generator().manual_seed(seed)
    steps = {
        "permute_mlp": lambda: permute_mlp(shape, gen),
        "scale_mlp": lambda: scale_mlp(shape, gen),
        "permute_heads": lambda: permute_heads(shape, gen),
        "scale_qk": lambda: scale_qk(shape, gen),
        "mix_vo": lambda: mix_vo(shape, gen),
        "fold_norms": lambda: fold_norms(model, shape),
        "rotate_residual": lambda: rotate_residual(model, shape, gen),
    }
    for kind in KINDS:
        if kind in kinds:
            log.info("symmetry transform: %s", kind)
            steps[kind]()


def attack_checkpoint(
    src: str,
    dst: str | Path,
    kinds: tuple[str, ...] | list[str] = KINDS,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> dict:
    """Load the causal LM ``src`` (a folder, hub id or embedded name), apply ``kinds``, and save
    it with its tokenizer to the folder ``dst``. Returns what was done and the largest change of
    any logit on a probe sentence (float rounding only)."""
    from ..models import load_model  # transformers: only this entry point needs it

    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DitkitError(f"{dst} exists and is not an empty folder; name a new folder")
    _check_kinds(kinds)
    model, tok = load_model(src, dtype="float32", trust_remote_code=trust_remote_code)
    probe = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(probe).logits
        attack(model, kinds, seed)
        change = (model(probe).logits - before).abs().max().item()
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    log.info("attacked model written to %s (largest logit change %.2g)", dst, change)
    return {
        "source": str(src),
        "out": str(dst),
        "kinds": [k for k in KINDS if k in kinds],
        "seed": seed,
        "max_logit_change": change,
        "logit_scale": before.abs().max().item(),
    }
