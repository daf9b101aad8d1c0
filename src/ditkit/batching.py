"""Chat-formatted training sequences and their label masks.

Masks are built from lengths, never by matching the pad id: the embedded model's pad token is its
end-of-turn token, which also ends every answer and must carry loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100
# A ``system_prompt`` value meaning "send no system message": the chat template's own default
# applies (SmolLM2's inserts "You are a helpful AI assistant named SmolLM..." on every prompt).
TEMPLATE_DEFAULT = "@template"


@dataclass
class Encoded:
    """One sequence: prompt tokens then answer tokens (answer includes the end-of-turn marker)."""

    ids: list[int]
    n_prompt: int


def _system_supported(tok) -> bool:
    """False when the chat template refuses a system turn (Gemma-2-style templates raise)."""
    from jinja2 import TemplateError

    cached = getattr(tok, "_ditkit_system_ok", None)
    if cached is not None and cached[0] == tok.chat_template:
        return cached[1]
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tok.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        ok = True
    except TemplateError:
        ok = False
    tok._ditkit_system_ok = (tok.chat_template, ok)
    return ok


def chat_messages(tok, user: str, system: str | None) -> list[dict[str, str]]:
    """One user turn after ``system``: None or ``TEMPLATE_DEFAULT`` sends no system message.

    "" sends an empty system turn (the shortest prompt, and it overrides a template's default).
    A template that refuses system turns gets the system text folded into the user turn.
    """
    if system is None or system == TEMPLATE_DEFAULT:
        return [{"role": "user", "content": user}]
    if not _system_supported(tok):
        return [{"role": "user", "content": f"{system}\n\n{user}" if system else user}]
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def chat_prompt(tok, user: str, system: str | None = None) -> str:
    """The chat-template text up to and including the assistant header."""
    msgs = chat_messages(tok, user, system)
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
