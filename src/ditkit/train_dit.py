"""Train the DIT adapter (docs/method.md, "The DIT adapter").

Each example is a frozen weight diff (installed per batch row through the low-rank path, never as a
dense matrix) plus the question, supervised on the label tokens only. One shared LoRA adapter on the
same projections is the only trainable part; an optional preference term (dit.preference_weight)
also ranks each diff's own description above another diff's. Held-out training diffs give a
validation loss (cross-entropy only) for early stopping; every epoch leaves a checkpoint so a
killed run resumes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import distributed, lora, memory
from .batching import Encoded, collate, encode
from .config import DitConfig
from .diffs import WeightDiff, install_diffs, load_diff, save_peft
from .errors import DataError
from .files import atomic_folder, kill_point, write_json
from .models import model_identity
from .reader import label_logps
from .tasks.base import get_task

log = logging.getLogger(__name__)


def _target(d: WeightDiff, key: str) -> str:
    if key not in d.meta:
        raise DataError(
            f"a training diff has no {key!r} in its metadata (it has {sorted(d.meta)[:8]}): "
            'set dit.target to one of those (usually "label")'
        )
    return str(d.meta[key])


def _encode(tok, diffs: list[WeightDiff], cfg: DitConfig, system: str | None):
    # A diff of another task (a joint adapter, dit.extra_train) is asked its own task's question.
    return [
        encode(
            tok,
            d.meta.get(_QUESTION, cfg.question),
            _target(d, cfg.target),
            cfg.max_answer_tokens,
            system,
        )
        for d in diffs
    ]


_QUESTION = "_dit_question"  # set in memory only, by train_dit


def _ask_own_questions(diffs: list[WeightDiff], task: str | None) -> dict[str, str]:
    """Mark every diff whose task is not ``task`` with its task's question; returns
    ``{task: question}`` for the tasks marked."""

    asked = {}
    for d in diffs:
        other = d.meta.get("task")
        if task and other and other != task:
            asked[other] = d.meta[_QUESTION] = get_task(other).dit_question
    return asked


def _augment(d: WeightDiff, cfg: DitConfig, key: str) -> WeightDiff:
    """``d`` at a random multiplier and asked a random phrasing (``dit.scale_augment``,
    ``dit.extra_questions``), drawn from ``key`` alone so a resumed run draws the same."""
    low, high = cfg.scale_augment
    if low == high == 1.0 and not cfg.extra_questions:
        return d
    rng = random.Random(f"dit-augment|{key}")
    factor = rng.uniform(low, high)
    question = rng.choice([cfg.question, *cfg.extra_questions])
    out = d.scaled(factor)
    out.meta.setdefault(_QUESTION, question)  # a diff of another task keeps its own question
    return out


def _label_tokens(enc) -> int:
    """Supervised tokens of a batch: the answer tokens (`collate` labels exactly those)."""
    return sum(len(e.ids) - e.n_prompt for e in enc)


def _batch_loss(
    model, pad_id: int, diffs: list[WeightDiff], enc, n_tokens: int = 0
) -> torch.Tensor:
    """Summed cross-entropy of the label tokens of ``enc`` (diff i's example is ``enc[i]``) over
    ``n_tokens`` (default: this batch's count).

    Passing the global batch's count lets processes that each see part of a batch add up to the
    one-process mean.
    """
    install_diffs(model, diffs, torch.arange(len(diffs)))
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate(enc, pad_id).items()}
    out = model(**batch, num_items_in_batch=n_tokens or _label_tokens(enc))
    return out.loss


def _rejected(tok, batch: list[WeightDiff], cfg: DitConfig, system) -> list[Encoded | None]:
    """Per row, its question answered with another row's description (the next row, cyclically,
    whose label differs; None when every label is the same): the wrong description the
    preference term ranks below the row's own."""
    labels = [_target(d, cfg.target) for d in batch]
    n = len(batch)
    out: list[Encoded | None] = []
    for i, d in enumerate(batch):
        j = next((k % n for k in range(i + 1, i + n) if labels[k % n] != labels[i]), None)
        question = d.meta.get(_QUESTION, cfg.question)
        out.append(
            None if j is None else encode(tok, question, labels[j], cfg.max_answer_tokens, system)
        )
    return out


def _log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of the geometric-mean token probability p = exp(mean_logp)."""
    mean_logp = mean_logp.clamp(max=-1e-6)  # p = 1 has no odds
    return mean_logp - torch.log(-torch.expm1(mean_logp))


def _preference_loss(model, pad_id, diffs, enc, rejected, n_tokens: int, n_pairs: int, cfg):
    """Cross-entropy of the own labels plus ``cfg.preference_weight`` times the odds-ratio term
    (ORPO, Hong et al. 2024): -log sigmoid(log odds(own) - log odds(another row's label)), summed
    here and divided by the global batch's counts like the cross-entropy."""
    sums, counts = label_logps(model, pad_id, diffs, enc)
    loss = -sums.sum() / n_tokens
    keep = [i for i, r in enumerate(rejected) if r is not None]
    if keep:
        r_sums, r_counts = label_logps(
            model, pad_id, [diffs[i] for i in keep], [rejected[i] for i in keep]
        )
        own = _log_odds(sums[keep] / counts[keep])
        margin = own - _log_odds(r_sums / r_counts)
        loss = loss - cfg.preference_weight * torch.nn.functional.logsigmoid(margin).sum() / n_pairs
    return loss


def _val_loss(model, tok, diffs: list[WeightDiff], cfg: DitConfig, system) -> torch.Tensor:
    return _batch_loss(model, tok.pad_token_id, diffs, _encode(tok, diffs, cfg, system))


def _train_step(model, tok, batch: list[WeightDiff], cfg: DitConfig, system, opt) -> float:
    """One optimizer step on a global batch; under a launcher each process takes its share and
    the adapter's gradients are summed across processes. Returns the batch's mean loss."""
    params = [p for group in opt.param_groups for p in group["params"]]
    enc = _encode(tok, batch, cfg, system)
    mine = distributed.share(list(range(len(batch))))
    opt.zero_grad(set_to_none=False)
    loss = torch.zeros((), device=params[0].device)
    if mine:
        diffs, mine_enc = [batch[i] for i in mine], [enc[i] for i in mine]
        if cfg.preference_weight > 0:
            rejected = _rejected(tok, batch, cfg, system)
            n_pairs = sum(r is not None for r in rejected)
            loss = _preference_loss(
                model, tok.pad_token_id, diffs, mine_enc, [rejected[i] for i in mine],
                _label_tokens(enc), n_pairs, cfg,
            )  # fmt: skip
        else:
            loss = _batch_loss(model, tok.pad_token_id, diffs, mine_enc, _label_tokens(enc))
        loss.backward()
    if distributed.world_size() > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        total = loss.detach().reshape(1).clone()
        distributed.all_reduce_sum_([p.grad for p in params] + [total])
        loss = total[0]
    opt.step()
    return float(loss.detach())


def _save_checkpoint(ckpt: Path, state: dict, model, best: dict, opt) -> None:
    """Adapter, best adapter, optimizer and state of one epoch, swapped in as one folder."""
    with atomic_folder(ckpt) as tmp:
        save_file(lora.adapter_state(model), str(tmp / "adapter.safetensors"))
        save_file(best, str(tmp / "best.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / "state.json", state)


def _load_checkpoint(ckpt: Path, model, opt) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        state = json.loads((ckpt / "state.json").read_text())
        lora.load_adapter_state(model, load_file(str(ckpt / "adapter.safetensors")))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        return state, lora.peft_named(load_file(str(ckpt / "best.safetensors")))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise DataError(
            f"{ckpt} is damaged ({type(exc).__name__}: {exc}); delete that folder to restart "
            "DIT training from scratch"
        ) from exc


def _load_training_diffs(paths: list[Path]) -> list[WeightDiff]:
    diffs = [load_diff(p) for p in tqdm(paths, desc="loading diffs", leave=False, disable=None)]
    unlabeled = [str(p) for p, d in zip(paths, diffs) if not d.meta.get("label")]
    if unlabeled:
        raise DataError(f"diffs without a 'label' in their metadata: {unlabeled[:3]}")
    if not diffs:
        raise DataError("no training diffs: run the diffs stage first")
    return diffs


def _recipe(cfg: DitConfig, system) -> dict:
    """What a reader of the adapter needs to ask it the way it was trained."""
    return {
        "question": cfg.question,
        "target": cfg.target,
        "scale_augment": list(cfg.scale_augment),
        "extra_questions": list(cfg.extra_questions),
        "system_prompt": system,
    }


def _epoch(model, tok, train: list[WeightDiff], cfg: DitConfig, system, opt, key: str) -> float:
    """One pass over the training diffs; returns the mean batch loss. The order and any
    augmentation come from ``key`` (seed and epoch) alone, so a resumed run sees the same."""
    model.train()
    order = list(range(len(train)))
    random.Random(f"dit-epoch|{key}").shuffle(order)
    shuffled = [_augment(train[i], cfg, f"{key}|{i}") for i in order]
    losses = []
    bar = tqdm(range(0, len(train), cfg.batch_size), desc="DIT epoch", leave=False, disable=None)
    for i in bar:
        losses.append(_train_step(model, tok, shuffled[i : i + cfg.batch_size], cfg, system, opt))
        kill_point("dit.step")
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return sum(losses) / len(losses)


def _validate(model, tok, val: list[WeightDiff], cfg: DitConfig, system) -> float:
    """Mean validation loss over batches of the held-out training diffs."""
    model.eval()
    with torch.no_grad():
        losses = [
            float(_val_loss(model, tok, val[i : i + cfg.batch_size], cfg, system))
            for i in range(0, len(val), cfg.batch_size)
        ]
    return sum(losses) / len(losses)


def _start_or_resume(ckpt: Path, model, opt) -> tuple[dict, dict[str, torch.Tensor]]:
    """The training state and best adapter: from ``ckpt`` when a killed run left one."""
    if (ckpt / "state.json").exists():
        state, best = _load_checkpoint(ckpt, model, opt)
        log.info("resuming DIT training after epoch %d", state["epoch"])
        return state, best
    return {"epoch": 0, "best_val": math.inf, "bad_epochs": 0, "history": []}, lora.adapter_state(
        model
    )


def _split(diffs: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """``(train, validation)``: a seeded share of the diffs held out for early stopping (none
    below 4 diffs)."""
    order = list(range(len(diffs)))
    random.Random(seed).shuffle(order)
    n_val = round(val_fraction * len(diffs)) if len(diffs) >= 4 else 0
    return [diffs[i] for i in order[n_val:]], [diffs[i] for i in order[:n_val]]


def _report_memory(model, tok, params, diffs, cfg: DitConfig, system) -> None:
    longest = max(len(e.ids) for e in _encode(tok, diffs[:1], cfg, system))
    estimate = memory.estimate(
        model,
        trainable=sum(p.numel() for p in params),
        rows=cfg.batch_size,
        seq=longest,
        answer_tokens=cfg.max_answer_tokens,
    )
    memory.report("DIT training", estimate)


def _adapter_meta(model, diffs, other_questions, cfg, system, n_train, n_val) -> dict:
    """What an adapter records about its base model, recipe and training diffs."""
    return {
        **model_identity(model),
        "kind": "dit-adapter",
        "task": diffs[0].meta.get("task"),
        "other_task_questions": other_questions,
        **_recipe(cfg, system),
        "n_train_diffs": n_train,
        "n_val_diffs": n_val,
        "preference_weight": cfg.preference_weight,
        # Every label it learned from (training and validation diffs, in file order): what a
        # test set must avoid, and what a nested-subset sweep can check.
        "training_labels": [d.meta.get("label") for d in diffs],
    }


def train_dit(
    model,
    tok,
    diff_paths: list[Path],
    cfg: DitConfig,
    out_dir: Path,
    seed: int = 0,
    system: str | None = "",
    task: str | None = None,
):
    """Train (or resume) the adapter on ``diff_paths``; writes a PEFT folder to ``out_dir``.

    ``system`` is the chat prompt's system turn, recorded as the adapter's ``system_prompt``.
    Diffs of a task other than ``task`` (the run's) are asked their own task's question.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    diffs = _load_training_diffs(diff_paths)
    other_questions = _ask_own_questions(diffs, task)
    train, val = _split(diffs, cfg.val_fraction, seed)
    targets = sorted({n.rsplit(".", 1)[-1] for d in diffs for n in d.modules})

    for p in model.parameters():
        p.requires_grad_(False)
    layers = lora.inject(model, targets)
    torch.manual_seed(seed)
    params = lora.add_adapters(model, cfg.rank, cfg.alpha)
    _report_memory(model, tok, params, diffs, cfg, system)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    ckpt = out_dir / "checkpoint"
    state, best = _start_or_resume(ckpt, model, opt)
    start = time.time()
    min_epochs = cfg.min_epochs if cfg.min_epochs is not None else -(-cfg.epochs // 2)
    for epoch in range(state["epoch"], cfg.epochs):
        if state["bad_epochs"] >= cfg.patience and val and epoch >= min_epochs:
            log.info("early stop: validation loss has not improved for %d epochs", cfg.patience)
            break
        train_loss = _epoch(model, tok, train, cfg, system, opt, f"{seed}|{epoch}")
        val_loss = _validate(model, tok, val, cfg, system) if val else train_loss
        state["history"].append(
            {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss}
        )
        log.info("DIT epoch %d: train loss %.4f, val loss %.4f", epoch + 1, train_loss, val_loss)
        if val_loss < state["best_val"]:
            state["best_val"], state["bad_epochs"] = val_loss, 0
            best = lora.adapter_state(model)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if distributed.is_main():
            _save_checkpoint(ckpt, state, model, best, opt)
    model.eval()
    lora.clear_diffs(model)
    meta = _adapter_meta(model, diffs, other_questions, cfg, system, len(train), len(val))
    pairs = {n: (best[f"{n}.lora_A"], best[f"{n}.lora_B"]) for n in layers}
    adapter = WeightDiff(pairs, {}, cfg.alpha, {**meta, "history": state["history"]})
    if distributed.is_main():
        save_peft(adapter, out_dir / "adapter", extra={"train_seconds": time.time() - start})
    lora.remove(model)
    return adapter, state["history"]
