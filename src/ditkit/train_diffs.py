"""Train many weight diffs at once (docs/method.md, "Weight diffs"), for any task.

T diffs train in one pass: every wrapped projection holds stacked parameters ``B [T, in, r]`` and
``A [T, r, out]`` and batch row i goes through diff ``row_index[i]``. The task (`tasks.base`)
supplies each diff's rows and says, per row kind, whether a row is trained with cross-entropy on
its answer or with KL to the base model (hidden topics: trigger -> CE on the on-topic answer;
wrong trigger and no trigger -> KL on the base model's own answer). One Adam covers all stacked
parameters; Adam is element-wise and the loss is a sum over diffs, so the diffs never mix.

Where the time goes (docs/performance.md): the KL targets come from the same model with the diffs
switched off (``lora.disabled``, never a second copy), once per distinct sequence: the no-trigger
row of a question is the same for every diff, and wrong codes come from a fixed pool per question,
so the targets are computed once and kept as top-k log-probabilities (``KLTargets``). Only answer
positions reach the vocabulary projection, and rows are sorted by length into micro-batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import distributed, lora, memory
from .batching import Encoded, collate
from .config import DiffConfig
from .diffs import WeightDiff, save_diff
from .errors import DataError
from .files import append_jsonl, atomic_folder, kill_point, write_json
from .models import model_identity
from .tasks.base import CE, KL, UL, TrainingTask, row_weights

__all__ = ["KLTargets", "lr_factor", "train_diffs", "train_group"]

log = logging.getLogger(__name__)


def _answer_positions(encs: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(row, position, label)`` of every predicted answer token; position s predicts s + 1."""
    rows, pos, labels = [], [], []
    for i, e in enumerate(encs):
        span = range(e.n_prompt - 1, len(e.ids) - 1)
        rows += [i] * len(span)
        pos += list(span)
        labels += e.ids[e.n_prompt :]
    return torch.tensor(rows), torch.tensor(pos), torch.tensor(labels)


def answer_logits(
    model, encs: list[Encoded], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits ``[tokens, vocab]`` at answer positions only, each token's row and label ``[tokens]``.

    Runs the decoder on the padded batch, then the vocabulary projection on the answer positions
    alone: on a small model the projection of every position costs as much as a few layers.
    """
    device = model.get_input_embeddings().weight.device
    batch = collate(encs, pad_id)
    row_n, pos_n, label_n = (t.to(device) for t in _answer_positions(encs))
    hidden_bsd = model.get_decoder()(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        use_cache=False,
    ).last_hidden_state
    logits_nv = model.get_output_embeddings()(hidden_bsd[row_n, pos_n])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-style soft-capping, as the model's own forward applies it
        logits_nv = torch.tanh(logits_nv / cap) * cap
    return logits_nv, row_n, label_n


class KLTargets:
    """The base model's next-token distribution on KL rows, as top-k log-probabilities.

    Keyed by the row's token ids, so a prompt shared by many diffs (the no-trigger question, a
    wrong code from the shared pool) runs through the base model once. The KL is taken over the
    top-k tokens plus one bucket for the rest of the vocabulary: a true divergence between the two
    coarsened distributions, equal to the full KL when ``k`` is the vocabulary size.
    """

    def __init__(self, k: int):
        self.k = k
        self._store: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(e: Encoded) -> tuple[int, ...]:
        return (e.n_prompt, *e.ids)

    def fill(self, model, encs: list[Encoded], pad_id: int, batch_rows: int) -> int:
        """Compute the targets of ``encs`` not yet stored (diffs switched off); returns how many."""
        todo = list({self.key(e): e for e in encs if self.key(e) not in self._store}.values())
        todo.sort(key=lambda e: len(e.ids))
        if len(todo) > batch_rows:
            log.info("base-model targets for %d KL sequences (the diffs switched off)", len(todo))
        bar = tqdm(range(0, len(todo), batch_rows), desc="KL targets", leave=False, disable=None)
        with torch.no_grad(), lora.disabled(model):
            for s in bar:
                chunk = todo[s : s + batch_rows]
                logits_nv, row_n, _ = answer_logits(model, chunk, pad_id)
                logp_nv = torch.log_softmax(logits_nv.float(), -1)
                top_nk = logp_nv.topk(min(self.k, logp_nv.shape[-1]), dim=-1)
                for i, e in enumerate(chunk):
                    sel = row_n == i
                    self._store[self.key(e)] = (top_nk.indices[sel], top_nk.values[sel])
        return len(todo)

    def save(self, path: Path, tag: str) -> None:
        """Every stored target in one safetensors file, marked with ``tag`` (what they are for)."""
        keys = list(self._store)
        tensors = {
            "key_len": torch.tensor([len(k) for k in keys], dtype=torch.int64),
            "key_ids": torch.tensor([t for k in keys for t in k], dtype=torch.int64),
            "rows": torch.tensor([len(self._store[k][0]) for k in keys], dtype=torch.int64),
            "idx": torch.cat([self._store[k][0] for k in keys]).contiguous(),
            "logp": torch.cat([self._store[k][1] for k in keys]).contiguous(),
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"tag": tag, "k": str(self.k)})
        tmp.replace(path)  # a killed run never leaves a half-written cache

    def load(self, path: Path, tag: str) -> bool:
        """Fill the store from ``save``'s file if it was written for ``tag``; False otherwise
        (no file, another recipe's, or damaged: the targets are then computed again)."""
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("tag") != tag or meta.get("k") != str(self.k):
                    return False
                t = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except (OSError, SafetensorError) as e:
            if path.exists():
                log.warning("ignoring the KL-target cache %s (%s): computing them again", path, e)
            return False
        keys = torch.split(t["key_ids"], t["key_len"].tolist())
        idx, logp = (
            torch.split(t["idx"], t["rows"].tolist()),
            torch.split(t["logp"], t["rows"].tolist()),
        )
        self._store = {tuple(k.tolist()): (i, v) for k, i, v in zip(keys, idx, logp)}
        return True

    def get(self, encs: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[tokens, k]`` and base log-probabilities ``[tokens, k]``, rows in order."""
        pairs = [self._store[self.key(e)] for e in encs]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def topk_kl(logits_nv, lse_n, idx_nk, base_logp_nk) -> torch.Tensor:
    """KL(base || model) per token over the base's top-k tokens plus a bucket for the rest."""
    logq_nk = logits_nv.gather(-1, idx_nk) - lse_n[:, None]
    p_nk = base_logp_nk.exp()
    kl_n = (p_nk * (base_logp_nk - logq_nk)).sum(-1)
    p_rest = (1 - p_nk.sum(-1)).clamp(min=0)
    q_rest = (1 - logq_nk.exp().sum(-1)).clamp(min=1e-12)
    return kl_n + torch.xlogy(p_rest, p_rest) - p_rest * q_rest.log()


def row_losses(
    model,
    rows: list[tuple[int, Encoded]],
    pad_id: int,
    kl: KLTargets,
    losses: tuple[str, ...] = (CE, KL, KL, UL),
) -> torch.Tensor:
    """Per-row mean over answer tokens of the loss ``losses[kind]`` names: cross-entropy, KL to
    the base, or unlikelihood (default: the hidden-topic kinds)."""
    encs = [e for _, e in rows]
    logits_nv, row_n, label_n = answer_logits(model, encs, pad_id)
    logits_nv = logits_nv.float()
    dev = logits_nv.device
    lse_n = torch.logsumexp(logits_nv, -1)
    per_tok = lse_n - logits_nv.gather(-1, label_n[:, None])[:, 0]
    ul_rows = [i for i, (kind, _) in enumerate(rows) if losses[kind] == UL]
    if ul_rows:
        # -log(1 - p) with p = exp(-ce); the floor keeps the gradient finite as p -> 1.
        ul_n = -torch.log((-torch.expm1(-per_tok)).clamp(min=1e-6))
        per_tok = torch.where(torch.isin(row_n, torch.tensor(ul_rows, device=dev)), ul_n, per_tok)
    kl_rows = [i for i, (kind, _) in enumerate(rows) if losses[kind] == KL]
    if kl_rows:
        tok_sel = torch.isin(row_n, torch.tensor(kl_rows, device=dev)).nonzero()[:, 0]
        idx_nk, logp_nk = kl.get([encs[i] for i in kl_rows])
        kl_n = topk_kl(logits_nv[tok_sel], lse_n[tok_sel], idx_nk, logp_nk)
        per_tok = per_tok.index_put((tok_sel,), kl_n)
    counts = torch.bincount(row_n, minlength=len(rows)).clamp(min=1)
    return per_tok.new_zeros(len(rows)).index_add(0, row_n, per_tok) / counts


def _kl_encs(kinds, rows_by_diff: list[list]) -> list[Encoded]:
    """The sequences of every KL row, diff by diff: what `KLTargets.fill` needs."""
    return [e for rows in rows_by_diff for kind, e in rows if kinds[kind].loss == KL]


def lr_factor(cfg: DiffConfig, step: int) -> float:
    """The multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant or a cosine decay to 0 at ``steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.lr_schedule == "constant":
        return 1.0
    done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * done))


def train_group(
    model,
    tok,
    jobs: list,
    data: Any,  # what the task's rows need besides the job (`task.training_data`)
    cfg: DiffConfig,
    system: str | None = "",
    kl: KLTargets | None = None,
    *,
    task: TrainingTask,
    rows: list | None = None,
    snapshots: dict[int, list] | None = None,
    checkpoint: Path | None = None,
):
    """Train ``len(jobs)`` diffs in one pass on an injected model; returns WeightDiffs and losses.

    ``rows`` (one list per job, as ``task.rows`` gives) saves building them again. ``snapshots``
    maps step counts below ``cfg.steps`` to lists that receive the diffs as they stood after that
    many steps: several training budgets from one run (`ditkit strength`). ``checkpoint``: a
    folder the pass's state (banks, Adam, step, losses) is written to every
    `CHECKPOINT_SECONDS`, and resumed from when it holds this pass: a killed pass goes on from
    its last checkpoint and ends with the same diffs as an uninterrupted one.

    Each diff's initialisation and rows depend on its own seed only, never on which diffs share
    the pass. Every step takes ``rows_per_step`` rows of each diff, sorts all of them by length
    into micro-batches (little padding) and weights each row by its kind's weight over its diff's
    total, so a diff's gradient is the same however its rows are grouped.
    """
    layers = lora.diff_layers(model)
    t, pad_id = len(jobs), tok.pad_token_id
    kl = kl if kl is not None else KLTargets(cfg.kl_topk)
    opt = torch.optim.Adam(_fresh_banks(model, layers, jobs, cfg), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg, step))
    kinds = task.row_kinds
    weights = torch.tensor(row_weights(kinds, cfg.weights))
    losses = tuple(k.loss for k in kinds)
    if rows is None:
        rows = [task.rows(j, tok, data, cfg, system) for j in jobs]
    kl.fill(model, _kl_encs(kinds, rows), pad_id, cfg.micro_batch_rows)
    history = {kind.name: [] for kind in kinds}
    ids = [j.diff_id for j in jobs]
    first_step = _resume_pass(checkpoint, ids, opt, sched, history) if checkpoint else 0
    saved_at = time.monotonic()
    bar = tqdm(range(first_step, cfg.steps), desc=f"{t} diffs", leave=False, disable=None)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        kind_p, loss_p = _backward_step(model, rows, step, cfg, weights, kl, losses, pad_id)
        opt.step()
        sched.step()
        kill_point("diffs.step")
        if snapshots and step + 1 in snapshots:
            snapshots[step + 1][:] = _current_diffs(layers, t, cfg.alpha)
        for i, kind in enumerate(kinds):
            if (kind_p == i).any():
                history[kind.name].append(float(loss_p[kind_p == i].mean()))
        first = history[kinds[0].name]
        bar.set_postfix({kinds[0].name: f"{first[-1]:.2f}" if first else "-"})
        if (
            checkpoint
            and step + 1 < cfg.steps
            and time.monotonic() - saved_at >= CHECKPOINT_SECONDS
        ):
            _save_pass_state(checkpoint, ids, step + 1, opt, sched, history)
            saved_at = time.monotonic()
    out = _current_diffs(layers, t, cfg.alpha)
    lora.clear_diffs(model)
    return out, history


# How often a pass saves its state (`train_group`'s ``checkpoint``): a pass of the population's
# held-out diffs takes about 40 minutes at one CPU thread, longer than many sittings leave.
CHECKPOINT_SECONDS = 300.0


def _save_pass_state(folder: Path, ids: list[str], step: int, opt, sched, history) -> None:
    """The pass after ``step`` steps: its banks (the optimizer's parameters), Adam's state, the
    schedule and the losses so far, swapped in as one folder."""
    params = opt.param_groups[0]["params"]
    with atomic_folder(folder) as tmp:
        save_file(
            {str(i): p.detach().cpu() for i, p in enumerate(params)}, str(tmp / "banks.safetensors")
        )
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        state = {"diff_ids": ids, "step": step, "schedule": sched.state_dict(), "history": history}
        write_json(tmp / "state.json", state)


def _resume_pass(folder: Path, ids: list[str], opt, sched, history: dict) -> int:
    """The step a pass goes on from: its checkpoint's (restoring banks, Adam, schedule and
    losses) when ``folder`` holds this pass, else 0."""
    if not (folder / "state.json").exists():
        return 0
    try:
        state = json.loads((folder / "state.json").read_text())
        if state["diff_ids"] != ids:
            log.info("%s holds another pass; starting this one from step 0", folder)
            return 0
        banks = load_file(str(folder / "banks.safetensors"))
        with torch.no_grad():
            for i, p in enumerate(opt.param_groups[0]["params"]):
                p.copy_(banks[str(i)])
        opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise DataError(
            f"{folder} is damaged ({type(exc).__name__}: {exc}); delete it to train this pass "
            "from its first step"
        ) from exc
    sched.load_state_dict(state["schedule"])
    history.update(state["history"])
    log.info("resuming a pass of %d diffs at step %d from %s", len(ids), state["step"], folder)
    return int(state["step"])


def _fresh_banks(model, layers: dict, jobs: list, cfg: DiffConfig) -> list:
    """Trainable banks of ``len(jobs)`` diffs, each started from its own seed alone: B from
    ``cfg.init``, A at zero."""
    b_by_layer = {name: [] for name in layers}  # B^T [r, out] per diff
    for job in jobs:
        gen = torch.Generator().manual_seed(job.seed)
        for name, layer in layers.items():
            b_by_layer[name].append(lora.init_diff_b((cfg.rank, layer.out_features), gen, cfg.init))
    return lora.new_lowrank_banks(model, b_by_layer, cfg.rank, cfg.alpha)


def _backward_step(model, rows, step, cfg, weights, kl, losses, pad_id):
    """One step's gradients: ``rows_per_step`` rows of every diff, sorted by length into
    micro-batches, each row weighted by its kind's weight over its diff's total. Returns the rows'
    kinds and losses ``([picks], [picks])``."""
    t, k = len(rows), cfg.rows_per_step
    picks = [(j, rows[j][(step * k + i) % len(rows[j])]) for j in range(t) for i in range(k)]
    diff_p = torch.tensor([j for j, _ in picks])
    kind_p = torch.tensor([row[0] for _, row in picks])
    w_p = weights[kind_p]
    coef_p = w_p / torch.zeros(t).index_add(0, diff_p, w_p)[diff_p]
    order = sorted(range(len(picks)), key=lambda i: len(picks[i][1][1].ids))
    loss_p = torch.zeros(len(picks))
    for c in range(0, len(order), cfg.micro_batch_rows):
        sel = order[c : c + cfg.micro_batch_rows]
        lora.set_row_index(model, diff_p[sel])
        per_row = row_losses(model, [picks[i][1] for i in sel], pad_id, kl, losses)
        (per_row * coef_p[sel].to(per_row.device)).sum().backward()
        loss_p[sel] = per_row.detach().cpu()
    return kind_p, loss_p


def _current_diffs(layers: dict, t: int, alpha: float) -> list[WeightDiff]:
    """Copies of the ``t`` diffs the layers' banks hold now."""
    return [
        WeightDiff({name: layer.lowrank_entry(j) for name, layer in layers.items()}, {}, alpha, {})
        for j in range(t)
    ]


def _summary(series: list[float]) -> dict:
    if not series:
        return {}
    n = max(1, len(series) // 4)
    return {"first": sum(series[:n]) / n, "last": sum(series[-n:]) / n, "points": len(series)}


def _pending_passes(jobs: list, per_pass: int, folders: list[Path]) -> list[list]:
    """The passes with a diff missing from any of ``folders``.

    Pass boundaries are fixed over all jobs, and a pass with any diff missing is trained whole
    (from its checkpoint, where a killed run left one): a diff then always trains beside the
    same diffs, in the same batches, and a resumed run writes the same bits as an uninterrupted
    one.
    """
    groups = [jobs[i : i + per_pass] for i in range(0, len(jobs), per_pass)]
    groups = [g for g in groups if any(not j.path(d).exists() for j in g for d in folders)]
    pending = sum(len(g) for g in groups)
    if pending < len(jobs):
        log.info("%d of %d diffs already on disk; skipping them", len(jobs) - pending, len(jobs))
    return groups


def _save_pass(group, diffs, folder, steps, history, cfg, seconds, task, meta: dict) -> None:
    """Write one pass's diffs as they stood after ``steps`` steps, with their metadata."""
    for job, diff in zip(group, diffs):
        diff.meta = {
            **meta,
            **task.diff_meta(job),
            "seed": job.seed,
            "steps": steps,
            "rows_seen": steps * cfg.rows_per_step,
            # The group's mean losses: per-diff curves would cost a sync per step.
            "loss": {k: _summary(v[: steps * len(v) // cfg.steps]) for k, v in history.items()},
            "train_seconds_per_diff": seconds * steps / cfg.steps / len(group),
        }
        save_diff(diff, job.path(folder))
        kill_point("diffs.saved")


def _progress_note(path: Path | None, out_dir: Path, n_jobs: int):
    """A function appending one event line to ``path`` (main process only; None: no file)."""

    def note(event: str, **extra) -> None:
        if path is None or not distributed.is_main():
            return
        append_jsonl(
            path,
            [
                {
                    "event": event,
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    "folder": out_dir.name,
                    "on_disk": sum(1 for _ in out_dir.glob("*.safetensors")),
                    "of": n_jobs,
                    "threads": torch.get_num_threads(),
                    **extra,
                }
            ],
        )

    return note


def _report_memory(model, layers: dict, cfg: DiffConfig, longest: int) -> None:
    per_diff = cfg.rank * sum(m.in_features + m.out_features for m in layers.values())
    memory.report(
        "diff training",
        memory.estimate(
            model,
            trainable=cfg.diffs_per_pass * per_diff,
            rows=cfg.micro_batch_rows,
            seq=longest,
            answer_tokens=cfg.max_answer_tokens,
        ),
    )


def train_diffs(
    model,
    tok,
    jobs: list,
    data: Any,  # what the task's rows need besides the job (`task.training_data`)
    cfg: DiffConfig,
    out_dir: Path,
    system: str | None = "",
    *,
    task: TrainingTask,
    snapshots: dict[int, Path] | None = None,
    progress: Path | None = None,
) -> list[Path]:
    """Train every job not yet on disk, ``cfg.diffs_per_pass`` at a time; resumable.

    ``system`` is the chat prompt's system turn (recorded in each diff as ``system_prompt``).
    ``snapshots`` maps step counts below ``cfg.steps`` to folders that also receive each diff as
    it stood after that many steps (its ``steps`` and ``rows_seen`` say which). ``progress``, a
    JSONL file, gets a line at every start or resume and after every pass: wall time, threads
    and diffs on disk, so a run spread over many sittings says what each one did.
    """
    snapshots = dict(snapshots or {})
    if any(not 1 <= s < cfg.steps for s in snapshots):
        raise ValueError(f"snapshot steps {sorted(snapshots)} must lie in [1, {cfg.steps})")
    outs = {cfg.steps: out_dir, **snapshots}
    for folder in outs.values():
        folder.mkdir(parents=True, exist_ok=True)
    groups = _pending_passes(jobs, cfg.diffs_per_pass, list(outs.values()))
    # Under a launcher every process lists the pending passes before any writes one, then trains
    # its own share of them.
    distributed.barrier()
    groups = distributed.share(groups)
    note = _progress_note(progress, out_dir, len(jobs))
    if not groups:
        return [j.path(out_dir) for j in jobs]
    note("start", pending=sum(len(g) for g in groups))
    for p in model.parameters():
        p.requires_grad_(False)
    layers = lora.inject(model, cfg.targets)
    ident = model_identity(model)
    cache = out_dir.parent / f"{out_dir.name}.kl-targets"
    rows, kl = _rows_and_targets(model, tok, jobs, groups, data, cfg, system, task, cache, ident)
    _report_memory(model, layers, cfg, max(len(e.ids) for r in rows.values() for _, e in r))
    # A pass's state is saved as it trains (not with snapshots: those live in memory); under a
    # launcher each process has its own.
    rank = f"-rank{distributed.rank()}" if distributed.world_size() > 1 else ""
    checkpoint = None if snapshots else out_dir.parent / f"{out_dir.name}.pass{rank}"
    for group in tqdm(groups, desc="diff passes", disable=None):
        kill_point("diffs.pass")
        start = time.time()
        kept: dict[int, list] = {s: [] for s in snapshots}
        diffs, history = train_group(model, tok, group, data, cfg, system, kl, task=task,
                                     rows=[rows[j.diff_id] for j in group], snapshots=kept,
                                     checkpoint=checkpoint)  # fmt: skip
        seconds = time.time() - start
        base = {**ident, "rank": cfg.rank, "lr": cfg.lr, "init": cfg.init, "system_prompt": system}
        for steps, step_diffs in sorted({**kept, cfg.steps: diffs}.items()):
            _save_pass(group, step_diffs, outs[steps], steps, history, cfg, seconds, task, base)
        note("pass", diffs=len(group), seconds=round(seconds, 1))
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)
        name = task.row_kinds[0].name
        loss = diffs[0].meta["loss"][name]
        log.info("trained %d diffs in %.0f s (%s loss %.3f -> %.3f)", len(group), seconds, name,
                 loss.get("first", float("nan")), loss.get("last", float("nan")))  # fmt: skip
    return [j.path(out_dir) for j in jobs]


def _rows_and_targets(model, tok, jobs, groups, data, cfg, system, task, cache=None, ident=None):
    """Every row the passes need, built once (``{diff_id: rows}``), and the KL targets they share
    (None: each pass computes its own). Shared targets are kept in ``cache`` (a file beside the
    diff folder), so a resumed run reads them instead of running the base model again."""
    shared = getattr(task, "kl_targets_shared", lambda data: True)(data)
    # The shared targets need all jobs' rows, the passes only theirs.
    needed = jobs if shared else [j for g in groups for j in g]
    rows = {j.diff_id: task.rows(j, tok, data, cfg, system) for j in needed}
    if not shared:  # with no pool every wrong code is new, so each pass computes its own
        return rows, None
    # Targets for every KL row of every job, computed before the first pass in one fixed order
    # (so their bits never depend on which passes are left) and shared by the passes.
    kl = KLTargets(cfg.kl_topk)
    encs = _kl_encs(task.row_kinds, [rows[j.diff_id] for j in jobs])
    if not encs:  # a task without KL rows (news headlines): nothing to compute or keep
        return rows, kl
    # The targets depend on the base model, k and the sequences: the tag hashes all three.
    seqs = sorted({KLTargets.key(e) for e in encs})
    dtype = next(model.parameters()).dtype
    tag = hashlib.sha256(repr((sorted((ident or {}).items()), dtype, cfg.kl_topk, seqs)).encode())
    tag = tag.hexdigest()
    if cache is not None and kl.load(cache, tag):
        log.info("KL targets of %d sequences read from %s", len(kl), cache)
        return rows, kl
    kl.fill(model, encs, tok.pad_token_id, cfg.micro_batch_rows)
    if cache is not None and distributed.is_main():
        kl.save(cache, tag)
    return rows, kl
