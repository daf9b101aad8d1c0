"""Diff generation: ditkit's stacked multi-diff step vs the limit and vs a sequential peft loop.

All three train the same hidden-topic rows (trigger, wrong-trigger and no-trigger rows of the
84-row SEP-code recipe the quickstart used until 2026-12-07) on the embedded SmolLM2-135M, in
this one run:

- limit: the frozen base model's forward + input-gradient backward on the same micro-batches
  (no diffs, cross-entropy on the answer tokens): what any diff trainer must at least spend;
- ditkit: ``train_diffs.train_group`` (T diffs stacked, one row per diff per batch row, cached
  top-k KL targets, answer-only vocabulary projection, rows bucketed by length);
- peft: one rank-1 peft LoRA per diff trained alone, ``rows_per_step`` rows per step, the KL
  target from a base forward with the adapter disabled and full-vocabulary log-softmax: the
  straightforward way, as the reference code does it.

Prints seconds per row, tokens per second, ditkit / limit (target >= 0.85), ditkit vs peft
(target >= 2x), and the KL targets' cost as a share of diff training, on a first pass (empty
cache) and a later one (the cache kept from the first, as ``train_diffs`` keeps it).

    .venv/bin/python benchmarks/bench_diff_gen.py [--quick] [--diffs 24] [--steps 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import time

import torch

from ditkit import lora
from ditkit.batching import collate
from ditkit.config import DiffConfig
from ditkit.models import load_model
from ditkit.tasks.hidden_topic import (
    TASK,
    DiffJob,
    build_rows,
    load_questions,
    load_topics,
    random_prefix,
)
from ditkit.textgen import TemplateSource, generate_chat
from ditkit.train_diffs import KLTargets, answer_logits, train_group


def make_jobs(n: int, questions: list[str], offset: int) -> list[DiffJob]:
    source, rng = TemplateSource("focused"), random.Random(offset)
    topics = load_topics()[offset::7][:n]
    return [
        DiffJob(f"b{offset + i}", t, random_prefix(rng), offset + i, questions,
                source.topic_answers(t, questions, offset + i))
        for i, t in enumerate(topics)
    ]  # fmt: skip


def step_rows(jobs, tok, base, cfg, system):
    """The rows each diff sees in ``cfg.steps`` steps, as train_group picks them."""
    rows = [build_rows(j, tok, base, cfg, system) for j in jobs]
    k = cfg.rows_per_step
    return [
        [[rows[j][(s * k + i) % len(rows[j])] for i in range(k)] for s in range(cfg.steps)]
        for j in range(len(jobs))
    ]


def time_limit(model, tok, per_diff, micro: int) -> float:
    """Forward + input-gradient backward of the frozen model over the same rows, bucketed."""
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_())
    start = time.perf_counter()
    for s in range(len(per_diff[0])):
        encs = sorted((e for d in per_diff for _, e in d[s]), key=lambda e: len(e.ids))
        for c in range(0, len(encs), micro):
            logits_nv, *_ = answer_logits(model, encs[c : c + micro], tok.pad_token_id)
            torch.logsumexp(logits_nv.float(), -1).sum().backward()
    hook.remove()
    return time.perf_counter() - start


def time_peft(model, tok, per_diff, cfg: DiffConfig) -> float:
    """One peft LoRA per diff, trained alone on its rows; KL via a base forward, full vocab."""
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(
        model, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=cfg.targets)
    )
    lora_params = [p for n, p in pm.named_parameters() if "lora_" in n]
    weights = torch.tensor(cfg.weights)
    start = time.perf_counter()
    for steps in per_diff:
        for mod in pm.modules():
            if hasattr(mod, "reset_lora_parameters"):
                mod.reset_lora_parameters("default", True)
        opt = torch.optim.Adam(lora_params, lr=cfg.lr)
        for picks in steps:
            kinds = torch.tensor([k for k, _ in picks])
            batch = collate([e for _, e in picks], tok.pad_token_id)
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            with torch.no_grad(), pm.disable_adapter():
                base_logp = torch.log_softmax(pm(**inputs).logits.float(), -1)
            logp = torch.log_softmax(pm(**inputs).logits.float(), -1)
            labels = batch["labels"][:, 1:]
            mask = (labels != -100).float()
            ce = -logp[:, :-1].gather(-1, labels.clamp(min=0)[..., None])[..., 0]
            kl = (base_logp.exp() * (base_logp - logp)).sum(-1)[:, :-1]
            per_tok = torch.where((kinds == 0)[:, None], ce, kl)
            per_row = (per_tok * mask).sum(1) / mask.sum(1)
            w = weights[kinds]
            loss = (per_row * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 diffs, 6 steps (a few minutes)")
    ap.add_argument("--diffs", type=int, default=24)
    ap.add_argument("--steps", type=int, default=14, help="= questions per diff: rows seen once")
    ap.add_argument("--peft-diffs", type=int, default=6, help="diffs timed in the peft loop")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.quick:
        args.diffs, args.steps, args.peft_diffs = 8, 6, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DiffConfig(
        steps=args.steps, rows_per_step=3, diffs_per_pass=args.diffs, max_answer_tokens=20,
        base_answer_tokens=12, questions_per_diff=args.steps,
    )  # fmt: skip
    system = ""
    model, tok = load_model("smollm2-135m", dtype=args.dtype)
    questions = [q.question for q in load_questions(split="train")][: cfg.questions_per_diff]
    answers = generate_chat(model, tok, questions, cfg.base_answer_tokens, system=system)
    base = dict(zip(questions, answers))
    peft_model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model, cfg.targets)

    jobs = make_jobs(args.diffs, questions, 0)
    per_diff = step_rows(jobs, tok, base, cfg, system)
    n_rows = args.diffs * args.steps * cfg.rows_per_step
    n_tok = sum(len(e.ids) for d in per_diff for s in d for _, e in s)
    # Warm-up (first calls allocate and pick kernels), then the timings.
    train_group(
        model, tok, make_jobs(4, questions, 500), base, DiffConfig(steps=1), system, task=TASK
    )
    t_limit = time_limit(model, tok, per_diff, cfg.micro_batch_rows)
    kl = KLTargets(cfg.kl_topk)

    def one_pass(pass_jobs):
        rows = step_rows(pass_jobs, tok, base, cfg, system)
        t0 = time.perf_counter()
        n = kl.fill(model, [e for d in rows for s in d for k, e in s if k], tok.pad_token_id, 24)
        t_fill = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_group(model, tok, pass_jobs, base, cfg, system, kl, task=TASK)  # its fill finds all
        return t_fill, time.perf_counter() - t0, n

    t_kl_cold, t_ditkit, n_cold = one_pass(jobs)
    # A second pass of other diffs with the cache kept: the steady state of a long run.
    t_kl_warm, t_second, n_warm = one_pass(make_jobs(args.diffs, questions, 1000))
    lora.remove(model)
    t_peft = time_peft(peft_model, tok, per_diff[: args.peft_diffs], cfg)
    peft_per_row = t_peft / (args.peft_diffs * args.steps * cfg.rows_per_step)

    per_row = t_ditkit / n_rows  # includes the (cached) KL lookups; the fill is timed apart
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {args.dtype}",
        "diffs": args.diffs,
        "steps": args.steps,
        "rows": n_rows,
        "tokens_per_row": round(n_tok / n_rows, 1),
        "limit_s_per_row": round(t_limit / n_rows, 4),
        "ditkit_s_per_row": round(per_row, 4),
        "ditkit_tokens_per_s": round(n_tok / t_ditkit, 1),
        "peft_s_per_row": round(peft_per_row, 4),
        "ditkit_vs_limit": round(t_limit / t_ditkit, 3),
        "ditkit_speedup_vs_peft": round(peft_per_row / per_row, 2),
        "kl_share_first_pass": round(t_kl_cold / (t_kl_cold + t_ditkit), 3),
        "kl_targets_first_pass": n_cold,
        "kl_share_second_pass": round(t_kl_warm / (t_kl_warm + t_second), 3),
        "kl_targets_second_pass": n_warm,
    }
    print(
        f"ditkit {per_row:.3f} s/row ({result['ditkit_tokens_per_s']} tok/s) | limit "
        f"{result['limit_s_per_row']:.3f} s/row -> ditkit/limit {result['ditkit_vs_limit']:.2f} "
        f"(target >= 0.85) | peft {peft_per_row:.3f} s/row -> {result['ditkit_speedup_vs_peft']}x "
        f"(target >= 2) | KL share first pass {result['kl_share_first_pass']:.1%}, "
        f"later pass {result['kl_share_second_pass']:.1%} (target <= 10%)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
