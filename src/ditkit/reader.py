"""Apply weight diffs (and optionally the DIT adapter) to a base model and ask it questions."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from . import lora
from .batching import IGNORE, TEMPLATE_DEFAULT, Encoded, chat_prompt, collate, encode
from .diffs import WeightDiff, install_diffs
from .errors import DataError
from .generate import generate_chat
from .tasks.base import DEFAULT_TASK, get_task


def read_scale(adapter: WeightDiff) -> float:
    """The multiplier a DIT adapter reads diffs at by default: its recorded ``read_scale``
    (`ship_adapter`), else 1."""
    return float(adapter.meta.get("read_scale", 1.0))


def nothing_margin(adapter: WeightDiff) -> float | None:
    """The margin at or below which a behaviour reader's finding counts as "nothing found": its
    recorded ``nothing_margin`` (`ship_adapter`), else None (every finding stands)."""
    value = adapter.meta.get("nothing_margin")
    return None if value is None else float(value)


@contextmanager
def _reading(model, adapter: WeightDiff | None, diffs: Sequence[WeightDiff | None]):
    """``model`` with the layers ``adapter`` and ``diffs`` touch wrapped and ``adapter`` set;
    diffs and adapter removed after, whatever happens."""
    targets = {n.rsplit(".", 1)[-1] for d in [adapter, *diffs] if d for n in d.modules}
    lora.inject(model, targets or lora.DEFAULT_TARGETS)
    lora.set_adapter(model, adapter)
    try:
        yield
    finally:
        lora.clear_diffs(model)
        lora.set_adapter(model, None)


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
    answers: list[str] = []
    with _reading(model, adapter, diffs):
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


def label_logps(
    model,
    pad_id: int,
    diffs: Sequence[WeightDiff],
    enc: Sequence[Encoded],
    index_b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(summed log-probability of each row's answer tokens, their count)``, both ``[batch]``,
    row i with ``diffs[index_b[i]]`` installed (default: ``diffs[i]``; the adapter, if any,
    already set on ``model``)."""
    install_diffs(model, list(diffs), torch.arange(len(diffs)) if index_b is None else index_b)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate(list(enc), pad_id).items()}
    # Logits from the earliest answer position on only: the prompt's would be discarded.
    start = min(e.n_prompt for e in enc) - 1
    labels_bs = batch.pop("labels")[:, start + 1 :]
    keep = batch["input_ids"].shape[1] - start
    logits_bsv = model(**batch, logits_to_keep=keep).logits[:, :-1].float()
    mask_bs = labels_bs != IGNORE
    logp_bs = torch.log_softmax(logits_bsv, -1).gather(-1, labels_bs.clamp(min=0)[..., None])
    return (logp_bs[..., 0] * mask_bs).sum(-1), mask_bs.sum(-1)


# Answer tokens scored per row: a reader's answer is max_new_tokens (20 by default) long.
MARGIN_ANSWER_TOKENS = 64


def answer_margins(
    model,
    tok,
    diffs: Sequence[WeightDiff],
    adapter: WeightDiff,
    answers: Sequence[str],
    reference: str,
    question: str | None = None,
    batch_size: int = 8,
) -> list[float]:
    """How much surer the reader is of ``answers[i]`` than of ``reference`` (a behaviour
    reader's "Nothing unusual" label) for ``diffs[i]``: the mean log-probability per token of
    the one minus the other, both with the diff and the adapter applied and asked the adapter's
    question (0 when the two are the same text). A hallucinated finding sits near or below 0.
    Each text is scored as a whole answer (its turn-end marker included), so a margin measured
    on answers cut at one ``max_new_tokens`` is comparable only with answers cut at the same.
    """
    if len(diffs) != len(answers):
        raise ValueError(f"{len(diffs)} diffs but {len(answers)} answers")
    adapter.check_fits(model, "the DIT adapter")
    q, system = question or adapter_question(adapter), adapter_system(adapter)
    ref = encode(tok, q, reference, MARGIN_ANSWER_TOKENS, system)
    margins: list[float] = []
    with _reading(model, adapter, diffs), torch.no_grad():
        for start in range(0, len(diffs), batch_size):
            chunk = list(diffs[start : start + batch_size])
            n = len(chunk)
            enc = [encode(tok, q, a, MARGIN_ANSWER_TOKENS, system)
                   for a in answers[start : start + n]]  # fmt: skip
            # Rows: the n answers, then the reference n times, each beside its own diff.
            sums_b, counts_b = label_logps(
                model, tok.pad_token_id, chunk, enc + [ref] * n, torch.arange(n).repeat(2)
            )
            mean_b = sums_b / counts_b.clamp(min=1)
            margins += (mean_b[:n] - mean_b[n:]).tolist()
    return margins


def read_forms(
    model,
    tok,
    diffs: Sequence[WeightDiff],
    adapter: WeightDiff,
    openings: Sequence[str],
    reference: str,
    question: str | None = None,
    max_new_tokens: int = 14,  # after the opening: the content is a few tokens
) -> list[dict]:
    """A structured read: for each diff the reader completes each of ``openings`` (its label
    forms, e.g. "A backdoor: when triggered, I promote"; greedy), each completed answer is
    scored whole as in `answer_margins`, and the surest is kept. Returns one dict per diff:
    ``answer`` (the surest), ``margin`` (its mean log-probability per token minus that of
    ``reference``, the "nothing" label: how much surer the reader is of it than of nothing) and
    ``answers`` (opening -> completed answer). Greedy decoding commits to its first token: a
    reader that opens with "Nothing" often names the right content when made to open with a
    family's form, so this reads the content of more diffs and leaves "nothing" to the margin.
    """
    if not openings:
        raise ValueError("read_forms needs at least one opening (a label form)")
    adapter.check_fits(model, "the DIT adapter")
    q, system = question or adapter_question(adapter), adapter_system(adapter)
    check_context(model, tok, [q], max_new_tokens + MARGIN_ANSWER_TOKENS, system)
    prompt_ids = tok(chat_prompt(tok, q, system), add_special_tokens=False)["input_ids"]
    rows = [prompt_ids + tok(o, add_special_tokens=False)["input_ids"] for o in openings]
    width = max(map(len, rows))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    # Left-padded: every row's next token comes at the same position.
    ids_bs = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    attn_bs = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    same_b = torch.zeros(len(rows), dtype=torch.long)  # every row reads the one diff
    out: list[dict] = []
    with _reading(model, adapter, diffs), torch.no_grad():
        for diff in tqdm(diffs, desc="read_forms", leave=False, disable=None):
            install_diffs(model, [diff], same_b)
            new_bs = model.generate(
                input_ids=ids_bs, attention_mask=attn_bs, max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=pad,
            )[:, width:]  # fmt: skip
            # Opening and continuation decoded together: a SentencePiece decoder drops the
            # leading space of a continuation decoded alone.
            answers = [
                tok.decode(r[len(prompt_ids) :] + t.tolist(), skip_special_tokens=True)
                .split("\n")[0]
                .strip()
                for r, t in zip(rows, new_bs)
            ]
            texts = [*answers, reference]
            enc = [encode(tok, q, t, MARGIN_ANSWER_TOKENS, system) for t in texts]
            sums_b, counts_b = label_logps(
                model, pad, [diff], enc, torch.zeros(len(texts), dtype=torch.long)
            )
            mean_b = (sums_b / counts_b.clamp(min=1)).tolist()
            best = max(range(len(answers)), key=mean_b.__getitem__)
            out.append({"answer": answers[best], "margin": mean_b[best] - mean_b[-1],
                        "answers": dict(zip(openings, answers))})  # fmt: skip
    return out
