"""Apply weight diffs (and optionally the DIT adapter) to a base model and ask it questions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from . import lora
from .batching import TEMPLATE_DEFAULT, chat_prompt
from .diffs import WeightDiff, install_diffs
from .errors import DataError
from .generate import generate_chat
from .tasks.base import DEFAULT_TASK, get_task


def read_scale(adapter: WeightDiff) -> float:
    """The multiplier a DIT adapter reads diffs at by default: its recorded ``read_scale``
    (`ship_adapter`), else 1."""
    return float(adapter.meta.get("read_scale", 1.0))


def check_context(model, tok, prompts: Sequence[str], max_new_tokens: int, system) -> None:
    """Raise ``DataError`` if a prompt plus its answer cannot fit the model's context window."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return
    for prompt in dict.fromkeys(prompts):
        n = len(tok(chat_prompt(tok, prompt, system), add_special_tokens=False)["input_ids"])
        if n + max_new_tokens > limit:
            name = getattr(model.config, "name_or_path_ditkit", None) or model.config.name_or_path
            raise DataError(
                f"the question {prompt[:60]!r}{'...' if len(prompt) > 60 else ''} is {n} tokens "
                f"in the chat template, and with {max_new_tokens} new tokens it needs "
                f"{n + max_new_tokens}, but the model {name or '(unnamed)'} has a context of {limit} "
                "tokens (max_position_embeddings); shorten the question or lower max_new_tokens"
            )


def ask(
    model,
    tok,
    diffs: Sequence[WeightDiff | None],
    prompts: Sequence[str],
    *,
    adapter: WeightDiff | None = None,
    max_new_tokens: int = 20,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    desc: str = "asking",
    system: str | None = "",
) -> list[str]:
    """Answer ``prompts[i]`` with ``diffs[i]`` applied (None = the base model) plus ``adapter``.

    ``system`` is the system turn of every prompt; use the one the diffs were trained with.
    """
    if len(diffs) != len(prompts):
        raise ValueError(f"{len(diffs)} diffs but {len(prompts)} prompts")
    check_context(model, tok, prompts, max_new_tokens, system)
    if adapter is not None:
        adapter.check_fits(model, "the DIT adapter")
    targets = {n.rsplit(".", 1)[-1] for d in diffs if d for n in d.modules}
    if adapter is not None:
        targets |= {n.rsplit(".", 1)[-1] for n in adapter.modules}
    lora.inject(model, targets or lora.DEFAULT_TARGETS)
    lora.set_adapter(model, adapter)
    answers: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False, disable=None):
            chunk = list(diffs[start : start + batch_size])
            present = [d for d in chunk if d is not None]
            index, j = [], 0
            for d in chunk:
                index.append(j if d is not None else -1)
                j += d is not None
            lora.clear_diffs(model)
            if present:
                install_diffs(model, present, torch.tensor(index))
            answers += generate_chat(
                model,
                tok,
                list(prompts[start : start + batch_size]),
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                system=system,
                batch_size=len(chunk),
                keep_rows=True,  # row i carries diff i: never regroup the prompts
            )
    finally:
        lora.clear_diffs(model)
        lora.set_adapter(model, None)
    return answers


def describe(
    model,
    tok,
    diffs: Sequence[WeightDiff],
    adapter: WeightDiff,
    question: str | None = None,
    max_new_tokens: int = 20,
    batch_size: int = 8,
) -> list[str]:
    """The DIT answer for each diff: base model + diff + adapter, asked the adapter's question.

    The prompt format is the adapter's own (its ``system_prompt``; adapters from before it was
    recorded were trained with the chat template's default).
    """
    return ask(
        model,
        tok,
        list(diffs),
        [question or adapter_question(adapter)] * len(diffs),
        adapter=adapter,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        desc="describe",
        system=adapter_system(adapter),
    )


def adapter_question(adapter: WeightDiff) -> str:
    """The question ``adapter`` was trained to answer: the one it recorded, else its task's DIT
    question (the earliest adapters recorded neither and were all hidden-topic adapters)."""
    if adapter.meta.get("question"):
        return adapter.meta["question"]
    return get_task(adapter.meta.get("task") or DEFAULT_TASK).dit_question


def adapter_system(adapter: WeightDiff) -> str | None:
    """The system prompt ``adapter`` was trained with (None: the template's default)."""
    return adapter.meta.get("system_prompt", TEMPLATE_DEFAULT)
