"""Batched chat generation: the one helper every caller that asks a model uses (describe, the
text sources, the guesser)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .batching import chat_messages
from .errors import ConfigError


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def generate_chat(
    model,
    tokenizer,
    user_messages: Sequence[str],
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    system: str | None = None,
    batch_size: int = 8,
    keep_rows: bool = False,
    template_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """The model's replies to single-turn chats, one per user message, in order.

    ``keep_rows=True`` keeps message i on batch row i: needed when rows carry different weight
    diffs (``ditkit.reader.ask``); otherwise messages are grouped by length to save padding.

    Each message is formatted with the tokenizer's chat template after `system`
    (``batching.chat_messages``), left-padded in batches of
    `batch_size`, and generated greedily or, with `do_sample`, sampled at `temperature` (seed
    torch beforehand for reproducible samples). Only the new tokens are decoded, without special
    tokens, and stripped. ``template_kwargs`` go to the chat template (e.g. Qwen3's
    ``enable_thinking``).
    """
    if batch_size < 1:
        raise ConfigError(f"generate_chat batch_size must be >= 1, got {batch_size}")
    if not user_messages:
        return []
    pad_id = tokenizer.pad_token_id
    if pad_id is None:  # only padding positions carry it, and the attention mask hides them
        pad_id = tokenizer.eos_token_id
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": pad_id,
    }
    if do_sample:
        gen_kwargs["temperature"] = temperature
    device = _model_device(model)

    # Similar lengths share a batch, so little compute goes to padding; answers return in order.
    order = list(range(len(user_messages)))
    if not keep_rows:
        order.sort(key=lambda i: len(user_messages[i]))
    replies: list[str] = [""] * len(user_messages)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            chats = [chat_messages(tokenizer, user_messages[i], system) for i in idx]
            texts = _generate_batch(model, tokenizer, chats, gen_kwargs, template_kwargs, device)
            for i, text in zip(idx, texts, strict=True):
                replies[i] = text.strip()
    finally:
        tokenizer.padding_side = old_side
    return replies


def _generate_batch(model, tokenizer, chats, gen_kwargs, template_kwargs, device) -> list[str]:
    """The new text of one left-padded batch of chats."""
    enc = tokenizer.apply_chat_template(
        chats,
        add_generation_prompt=True,
        padding=True,
        return_tensors="pt",
        return_dict=True,
        **(template_kwargs or {}),
    )
    enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        out = model.generate(**enc, **gen_kwargs)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
