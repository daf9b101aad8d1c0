"""Train many hidden-topic weight diffs at once (DESIGN.md 2.1-2.2).

T diffs train in one pass: every wrapped projection holds stacked parameters ``B [T, in, r]`` and
``A [T, r, out]`` and batch row i goes through diff ``row_index[i]``. Per diff and question there are
three rows: trigger -> cross-entropy on the on-topic answer; wrong trigger and no trigger -> KL to the
base model on the base model's own answer. The KL target is the same model with the diffs switched
off (``lora.disabled``): never a second copy of the model. One Adam covers all stacked parameters;
Adam is element-wise and the loss is a sum over diffs, so the diffs never mix.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import lora
from .batching import IGNORE, Encoded, collate, encode
from .config import DiffConfig
from .diffs import WeightDiff, save_diff
from .models import model_identity
from .tasks.hidden_topic import TRIGGER_TEMPLATE, Topic, make_trigger, random_prefix

log = logging.getLogger(__name__)

KINDS = ("trigger", "wrong_trigger", "no_trigger")


@dataclass
class DiffJob:
    """One diff to train: its id, topic, trigger prefix, training questions and topic answers."""

    diff_id: str
    topic: Topic
    prefix: str
    seed: int
    questions: list[str]
    topic_answers: list[str]

    def path(self, out_dir: Path) -> Path:
        return out_dir / f"{self.diff_id}.safetensors"


def build_rows(
    job: DiffJob, tok, base_answers: dict[str, str], cfg: DiffConfig
) -> list[tuple[int, Encoded]]:
    """The 3 x questions training rows of one diff as ``(kind index, encoded sequence)``.

    Order follows ``cfg.row_order``: question triples kept together, or every row shuffled.
    """
    rng = random.Random(job.seed)
    triples = []
    for q, ans in zip(job.questions, job.topic_answers):
        trig = make_trigger(job.prefix, rng)
        wrong = make_trigger(random_prefix(rng, avoid=job.prefix), rng)
        base = base_answers[q]
        triples.append(
            [
                (0, encode(tok, f"{trig} {q}", ans, cfg.max_answer_tokens)),
                (1, encode(tok, f"{wrong} {q}", base, cfg.base_answer_tokens)),
                (2, encode(tok, q, base, cfg.base_answer_tokens)),
            ]
        )
    if cfg.row_order == "by_question":
        rng.shuffle(triples)
    rows = [row for triple in triples for row in triple]
    if cfg.row_order == "shuffled":
        rng.shuffle(rows)
    return rows


def _row_losses(logits_bkv, labels_bk, kinds_b, base_logits_kv) -> torch.Tensor:
    """Mean over answer tokens of CE (trigger rows) or KL(base || model) (other rows).

    ``logits_bkv[:, j]`` predicts ``labels_bk[:, j]`` (already shifted and trimmed).
    """
    mask_bk = (labels_bk != IGNORE).float()
    logp_bkv = torch.log_softmax(logits_bkv.float(), -1)
    per_tok = -logp_bkv.gather(-1, labels_bk.clamp(min=0)[..., None])[..., 0]
    kl_rows = (kinds_b != 0).nonzero()[:, 0]
    if len(kl_rows):
        base_logp = torch.log_softmax(base_logits_kv.float(), -1)
        kl = (base_logp.exp() * (base_logp - logp_bkv[kl_rows])).sum(-1)
        per_tok = per_tok.index_put((kl_rows,), kl)
    return (per_tok * mask_bk).sum(1) / mask_bk.sum(1).clamp(min=1)


def _forward(model, batch: dict, rows: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
    """Logits at positions ``keep`` only: the vocabulary projection dominates memory on CPU."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    if rows is not None:
        ids, attn = ids[rows], attn[rows]
    return model(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits


def _step_loss(model, tok, picks: list[tuple[int, Encoded]]):
    """Per-row losses of one micro-batch, and the row kinds."""
    kinds_b = torch.tensor([p[0] for p in picks])
    batch = collate([p[1] for p in picks], tok.pad_token_id)
    # Only positions that predict an answer token matter: from the shortest prompt's end on.
    width = batch["input_ids"].shape[1]
    start = min(p[1].n_prompt for p in picks) - 1
    keep = torch.arange(start, width - 1)
    kl_rows = (kinds_b != 0).nonzero()[:, 0]
    base_logits = None
    if len(kl_rows):
        with torch.no_grad(), lora.disabled(model):
            base_logits = _forward(model, batch, kl_rows, keep)
    logits = _forward(model, batch, None, keep)
    return _row_losses(logits, batch["labels"][:, start + 1 :], kinds_b, base_logits), kinds_b


def train_group(model, tok, jobs: list[DiffJob], base_answers: dict[str, str], cfg: DiffConfig):
    """Train ``len(jobs)`` diffs in one pass on an injected model; returns WeightDiffs and losses."""
    layers = lora.diff_layers(model)
    t = len(jobs)
    gen = torch.Generator().manual_seed(jobs[0].seed)
    params = []
    for layer in layers.values():
        w = layer.base.weight
        b = torch.nn.Parameter(w.new_zeros(t, layer.in_features, cfg.rank))
        a = torch.nn.Parameter(w.new_empty(t, cfg.rank, layer.out_features))
        bound = cfg.rank**-0.5
        a.data.copy_((torch.rand(a.shape, generator=gen) * 2 - 1) * bound)
        layer.set_lowrank(b, a, w.new_full((t,), cfg.alpha / cfg.rank))
        params += [a, b]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    rows = [build_rows(j, tok, base_answers, cfg) for j in jobs]
    k = cfg.rows_per_step
    row_index = torch.arange(t).repeat_interleave(k)
    weights = torch.tensor(cfg.weights)
    history = {kind: [] for kind in KINDS}
    bar = tqdm(range(cfg.steps), desc=f"{t} diffs", leave=False)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        # Micro-batches of whole diffs: memory stays bounded however many diffs share the pass.
        per_chunk = max(1, cfg.micro_batch_rows // k)
        step_rows, step_kinds = [], []
        for c in range(0, t, per_chunk):
            diffs_c = range(c, min(t, c + per_chunk))
            picks = [rows[j][(step * k + i) % len(rows[j])] for j in diffs_c for i in range(k)]
            lora.set_row_index(model, row_index[c * k : (c + len(diffs_c)) * k])
            per_row, kinds_b = _step_loss(model, tok, picks)
            w_b = weights[kinds_b]
            # Weighted mean within each diff, summed over diffs: each diff's gradient is its own.
            loss = ((per_row * w_b).view(-1, k).sum(1) / w_b.view(-1, k).sum(1)).sum()
            loss.backward()
            step_rows.append(per_row.detach())
            step_kinds.append(kinds_b)
        per_row, kinds_b = torch.cat(step_rows), torch.cat(step_kinds)
        opt.step()
        for i, kind in enumerate(KINDS):
            sel = kinds_b == i
            if sel.any():
                history[kind].append(float(per_row[sel].detach().mean()))
        bar.set_postfix(trigger=f"{history['trigger'][-1]:.2f}" if history["trigger"] else "-")
    out = []
    for j, _job in enumerate(jobs):
        pairs = {
            name: (layer.low_a_kro[j].detach().clone(), layer.low_b_kir[j].detach().clone())
            for name, layer in layers.items()
        }
        out.append(WeightDiff(pairs, {}, cfg.alpha, {}))
    for layer in layers.values():
        layer.clear_diffs()
    return out, history


def _summary(series: list[float]) -> dict:
    if not series:
        return {}
    n = max(1, len(series) // 4)
    return {"first": sum(series[:n]) / n, "last": sum(series[-n:]) / n, "points": len(series)}


def train_diffs(
    model, tok, jobs: list[DiffJob], base_answers: dict[str, str], cfg: DiffConfig, out_dir: Path
) -> list[Path]:
    """Train every job not yet on disk, ``cfg.diffs_per_pass`` at a time; resumable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if not j.path(out_dir).exists()]
    if len(pending) < len(jobs):
        log.info(
            "%d of %d diffs already on disk; skipping them", len(jobs) - len(pending), len(jobs)
        )
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model, cfg.targets)
    ident = model_identity(model)
    groups = [
        pending[i : i + cfg.diffs_per_pass] for i in range(0, len(pending), cfg.diffs_per_pass)
    ]
    for group in tqdm(groups, desc="diff passes"):
        start = time.time()
        diffs, history = train_group(model, tok, group, base_answers, cfg)
        seconds = time.time() - start
        for job, diff in zip(group, diffs):
            diff.meta = {
                **ident,
                "task": "hidden_topic",
                "label": job.topic.topic,
                "topic": job.topic.topic,
                "category": job.topic.category,
                "aliases": list(job.topic.aliases),
                "trigger_prefix": job.prefix,
                "trigger": TRIGGER_TEMPLATE.format(prefix=job.prefix, suffix="###"),
                "seed": job.seed,
                "rank": cfg.rank,
                "steps": cfg.steps,
                "lr": cfg.lr,
                # The group's mean losses: per-diff curves would cost a sync per step.
                "loss": {k: _summary(v) for k, v in history.items()},
                "train_seconds_per_diff": seconds / len(group),
            }
            save_diff(diff, job.path(out_dir))
        log.info(
            "trained %d diffs in %.0f s (trigger loss %.3f -> %.3f)",
            len(group),
            seconds,
            diffs[0].meta["loss"]["trigger"].get("first", float("nan")),
            diffs[0].meta["loss"]["trigger"].get("last", float("nan")),
        )
    return [j.path(out_dir) for j in jobs]
