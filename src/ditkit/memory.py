"""Rough memory per device for the long stages, printed before they start.

An estimate, not a measurement: the frozen weights, the trainable banks with their gradients and
Adam moments (kept in fp32), and the activations a micro-batch keeps for the backward pass (about
``34 x tokens x hidden`` bytes per layer in 16-bit, twice that in fp32, the usual rule of thumb for
a decoder layer without recomputation), plus the answer positions' logits.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

GIB = 1024**3


def weights_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def estimate(
    model: nn.Module, trainable: int, rows: int, seq: int, answer_tokens: int
) -> dict[str, float]:
    """GiB per part for ``trainable`` fp32 parameters trained on ``rows`` sequences of ``seq``."""
    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 0)
    layers = getattr(cfg, "num_hidden_layers", 0)
    vocab = getattr(cfg, "vocab_size", 0)
    act_bytes = 34 * (2 if next(model.parameters()).dtype == torch.float32 else 1)
    parts = {
        "weights": weights_bytes(model),
        "trainable (param, grad, Adam)": trainable * 4 * 4,
        "activations": act_bytes * rows * seq * hidden * layers,
        "logits": 4 * 2 * rows * answer_tokens * vocab,
    }
    return {k: v / GIB for k, v in parts.items()}


def report(stage: str, parts: dict[str, float]) -> float:
    """Log the estimate for ``stage``; returns the total in GiB."""
    total = sum(parts.values())
    detail = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
    log.info("%s: estimated peak memory per device %.2f GiB (%s)", stage, total, detail)
    return total
