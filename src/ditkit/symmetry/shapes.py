"""What the symmetry code knows about a Llama-family decoder, shared by `attack` and `align`:
its shape, its norms and who reads them, and the float64 edits of a projection's rows or columns.

Row vectors throughout, as in ``nn.Linear``: a layer computes ``y = x @ W.T + b`` with ``W``
``[out, in]``; the residual stream ``h`` is ``[d_model]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DitkitError


@dataclass
class Shape:
    """What the transforms need to know about a decoder."""

    layers: list[nn.Module]
    n_heads: int
    n_kv: int
    head_dim: int
    norm_offset: float  # Gemma's RMSNorm scales by (1 + weight), Llama's by weight
    post_norms: bool  # norms on the residual writes (Gemma2/3): no residual rotation


def shape_of(model: nn.Module) -> Shape:
    """The decoder layers and attention shape of a Llama-family causal LM."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    layers = getattr(getattr(model, "model", None), "layers", None)
    if cfg is None or not layers or not all(hasattr(layers[0], a) for a in ("mlp", "self_attn")):
        raise DitkitError(
            f"{type(model).__name__}: not a Llama-family decoder (model.model.layers with "
            "self_attn and mlp); the symmetry transforms know Llama, Mistral, Qwen2/3 and Gemma2/3"
        )
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    gemma = "gemma" in type(model).__name__.lower()
    return Shape(
        list(layers),
        n_heads,
        getattr(cfg, "num_key_value_heads", None) or n_heads,
        head_dim,
        1.0 if gemma else 0.0,
        hasattr(layers[0], "post_feedforward_layernorm"),
    )


# ---------------------------------------------------------------- helpers on nn.Linear


# Every transform is computed in float64 and rounded once into the weights' own dtype.


@torch.no_grad()
def edit_out(lin: nn.Linear, fn) -> None:
    """Apply ``fn`` to the output dimension: rows of the weight, entries of the bias."""
    lin.weight.copy_(fn(lin.weight.double()))
    if lin.bias is not None:
        lin.bias.copy_(fn(lin.bias.double()[:, None])[:, 0])


@torch.no_grad()
def edit_in(lin: nn.Linear, fn) -> None:
    """Apply ``fn`` to the input dimension (columns of the weight)."""
    lin.weight.copy_(fn(lin.weight.double().T).T)


def norm_scale(norm: nn.Module, shape: Shape) -> torch.Tensor:
    """What an RMSNorm multiplies by: its weight (Llama) or 1 + weight (Gemma)."""
    w = norm.weight.detach()
    return w.to(torch.promote_types(w.dtype, torch.float32)) + shape.norm_offset


@torch.no_grad()
def set_scale(norm: nn.Module, scale: torch.Tensor, shape: Shape) -> None:
    norm.weight.copy_(scale - shape.norm_offset)


def layer_norm_readers(layer: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
    """A decoder layer's two RMSNorms on the residual path, each with the projections reading it:
    the attention's (q, k, v) and the MLP's (gate, up)."""
    attn, mlp = layer.self_attn, layer.mlp
    pre_mlp = getattr(layer, "pre_feedforward_layernorm", None) or layer.post_attention_layernorm
    return [
        (layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
        (pre_mlp, [mlp.gate_proj, mlp.up_proj]),
    ]


def norm_readers(model: nn.Module, shape: Shape) -> list[tuple[nn.Module, list[nn.Linear]]]:
    """Each RMSNorm on the residual path with the projections that read its output."""
    pairs = [pair for layer in shape.layers for pair in layer_norm_readers(layer)]
    return [*pairs, (model.model.norm, [model.get_output_embeddings()])]


def untie(model: nn.Module) -> None:
    """Give the output embedding its own copy of a weight it shares with the input embedding."""
    head = model.get_output_embeddings()
    if head.weight is model.get_input_embeddings().weight:
        head.weight = nn.Parameter(head.weight.detach().clone())
        for cfg in (model.config, getattr(model.config, "text_config", None)):
            if cfg is not None:
                cfg.tie_word_embeddings = False


@torch.no_grad()
def rotate(model: nn.Module, shape: Shape, q: torch.Tensor) -> None:
    """Rotate the residual stream by the orthogonal ``q`` ``[d_model, d_model]``: ``h -> h q``.
    Exact only when every RMSNorm on the residual path has unit weight (`attack.fold_norms`)."""
    emb = model.get_input_embeddings()
    q = q.double()
    emb.weight.copy_(emb.weight.double() @ q)
    for layer in shape.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            edit_in(lin, lambda w, q=q: q.T @ w)
        for lin in (attn.o_proj, mlp.down_proj):
            edit_out(lin, lambda w, q=q: (w.T @ q).T)
    head = model.get_output_embeddings()
    if head.weight is not emb.weight:  # a tied head was rotated with the embedding
        edit_in(head, lambda w, q=q: q.T @ w)
