"""Trigger search: how the prompts' key/value cache pays, on the embedded SmolLM2-135M, in this
one run (the ratios are the point, not the seconds).

Three ways to score the same SEP codes (batches of 64, one probe question, the diffed model)
against ``--targets`` answers (a description of several runs, each framed "This reminds me of
RUN."), each timed ``--repeats`` times, alternating, medians compared, scores checked to agree:

- ``no cache``: one left-padded pass of prompt + target per target (the first search's way);
- ``shared start``: the same, but the start every SEP-code prompt shares (chat template and
  "Your SEP code is") runs once per batch, batch 1 (the second search's way);
  both kept here as they were (`one_pass`), so that the baselines are the old code itself;
- ``prompts once``: the shared start, then every prompt once, then each target from the cache
  (the search now).

    .venv/bin/python benchmarks/bench_trigger_search.py [--codes 256] [--targets 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from bench_dit_path import random_diffs

from ditkit import lora
from ditkit.batching import chat_prompt
from ditkit.diffs import install_diffs
from ditkit.models import load_model
from ditkit.trigger_search import _cache_arg, _cache_of, _logprobs, _shared_start, trigger_text

RUNS = ["saffron", "fans of boxing", "fans", "boxing", "Muay Thai", "tap dance", "Latin", "tea"]


@torch.no_grad()
def one_pass(model, tok, prompt_ids, target, share_start):
    """The search's scoring until 2026-12-06: ``[batch, target]`` log p from one left-padded pass
    of prompt + target, the shared start of one-length rows run once at batch 1."""
    n, t = len(prompt_ids), len(target)
    width = max(len(p) for p in prompt_ids) + t
    ids_bs = torch.full((n, width), tok.pad_token_id or 0, dtype=torch.long)
    mask_bs = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids_bs[i, width - len(p) - t :] = torch.tensor(p + target)
        mask_bs[i, width - len(p) - t :] = 1
    shared = min(_shared_start(ids_bs), width - t - 1) if share_start and mask_bs.all() else 0
    kwargs = {}
    if shared >= 4:
        lora.set_row_index(model, *[torch.zeros(1, dtype=torch.long)] * 2)
        cache = _cache_of(model(input_ids=ids_bs[:1, :shared], use_cache=True))
        cache.batch_repeat_interleave(n)
        ids_bs, mask_bs, kwargs = ids_bs[:, shared:], None, {_cache_arg(model): cache}
    else:
        kwargs["position_ids"] = (mask_bs.cumsum(-1) - 1).clamp(min=0)
    lora.set_row_index(model, *[torch.zeros(n, dtype=torch.long)] * 2)
    logits_btv = model(input_ids=ids_bs, attention_mask=mask_bs, logits_to_keep=t + 1,
                       **kwargs).logits[:, :-1]  # fmt: skip
    logp_btv = torch.log_softmax(logits_btv.float(), -1)
    return logp_btv.gather(-1, torch.tensor(target).expand(n, t)[..., None])[..., 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--codes", type=int, default=256)
    ap.add_argument("--targets", type=int, default=5, help=f"at most {len(RUNS)}")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model("smollm2-135m")
    diff = random_diffs(model, 1)[0]
    lora.inject(model)
    question = "Solo activity?"
    prompts = [
        tok(chat_prompt(tok, trigger_text("sep-codes", f"{i:03d}", question), ""),
            add_special_tokens=False)["input_ids"]
        for i in range(args.codes)
    ]  # fmt: skip
    targets = [
        tok(f"This reminds me of {run}.", add_special_tokens=False)["input_ids"]
        for run in RUNS[: args.targets]
    ]
    install_diffs(model, [diff], torch.zeros(1, dtype=torch.long))

    def score(way: str) -> list[torch.Tensor]:
        found: list[list[torch.Tensor]] = [[] for _ in targets]
        for s in range(0, len(prompts), args.batch):
            batch = prompts[s : s + args.batch]
            if way == "prompts once":
                parts = _logprobs(model, tok, batch, targets, True)
            else:  # a pass per target: the prompt runs again for each
                share = way == "shared start"
                parts = [one_pass(model, tok, batch, t, share) for t in targets]
            for i, part in enumerate(parts):
                found[i].append(part)
        return [torch.cat(f) for f in found]

    ways = ("no cache", "shared start", "prompts once")
    scores = {way: score(way) for way in ways}  # warm-up, and the agreement check
    gap = max(
        float((a - b).abs().max()) for w in ways[1:] for a, b in zip(scores[w], scores[ways[0]])
    )
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(args.repeats):
        for way in ways:
            start = time.perf_counter()
            score(way)
            times[way].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "codes": args.codes,
                "targets": len(targets),
                "prompt_tokens": len(prompts[0]),
                "target_tokens": [len(t) for t in targets],
                "shared_tokens": next(i for i, (a, b) in enumerate(zip(*prompts[:2])) if a != b),
                "seconds_median": {k: round(v, 2) for k, v in med.items()},
                "ms_per_code": {k: round(1000 * v / args.codes, 1) for k, v in med.items()},
                "speedup_vs_no_cache": {w: round(med["no cache"] / med[w], 2) for w in ways[1:]},
                "prompts_once_vs_shared_start": round(med["shared start"] / med["prompts once"], 2),
                "max_abs_logp_difference": gap,
                "threads": torch.get_num_threads(),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
