"""Chat-formatted training sequences and their label masks.

Masks are built from lengths, never by matching the pad id: the embedded model's pad token is its
end-of-turn token, which also ends every answer and must carry loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class Encoded:
    """One sequence: prompt tokens then answer tokens (answer includes the end-of-turn marker)."""

    ids: list[int]
    n_prompt: int


def chat_prompt(tok, user: str, system: str | None = None) -> str:
    """The chat-template text up to and including the assistant header."""
    msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}
    ]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def _turn_end(tok) -> str:
    # What the template writes after an assistant message ("<|im_end|>", "<end_of_turn>", ...).
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\u00a7"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    return text.rsplit("\u00a7", 1)[1].rstrip() or (tok.eos_token or "")


def encode(
    tok, user: str, answer: str, max_answer_tokens: int, system: str | None = None
) -> Encoded:
    """Tokenise ``user`` in the chat template followed by ``answer`` and the turn-end marker."""
    prompt_ids = tok(chat_prompt(tok, user, system), add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"][:max_answer_tokens]
    end_ids = tok(_turn_end(tok), add_special_tokens=False)["input_ids"]
    return Encoded(prompt_ids + answer_ids + end_ids, len(prompt_ids))


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; ``labels`` are -100 on prompt and padding, token ids on the answer."""
    width = max(len(e.ids) for e in batch)
    ids_bs = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn_bs = torch.zeros((len(batch), width), dtype=torch.long)
    labels_bs = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.ids)
        ids_bs[i, :n] = torch.tensor(e.ids)
        attn_bs[i, :n] = 1
        labels_bs[i, e.n_prompt : n] = ids_bs[i, e.n_prompt : n]
    return {"input_ids": ids_bs, "attention_mask": attn_bs, "labels": labels_bs}
