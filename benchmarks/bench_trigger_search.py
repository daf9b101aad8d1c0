"""Trigger search: scoring SEP codes with the shared-start cache against without it, on the
embedded SmolLM2-135M, in this one run (the ratio is the point, not the seconds).

Every SEP-code prompt has the same length, so the chat template and "Your SEP code is" can run
once per batch (batch 1) and their key/value cache serve every row. Both ways score the same 256
codes (4 batches of 64) for one probe question, the diffed model, the same target; each timed
3 times, alternating, medians compared; the scores are checked to agree.

    .venv/bin/python benchmarks/bench_trigger_search.py [--codes 256] [--threads 2]
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
from ditkit.trigger_search import _logprobs, trigger_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--codes", type=int, default=256)
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
    target = tok("This reminds me of saffron.", add_special_tokens=False)["input_ids"]
    install_diffs(model, [diff], torch.zeros(1, dtype=torch.long))

    def score(share: bool) -> torch.Tensor:
        return torch.cat([
            _logprobs(model, tok, prompts[s : s + args.batch], target, True, share_start=share)
            for s in range(0, len(prompts), args.batch)
        ])  # fmt: skip

    cached, plain = score(True), score(False)  # warm-up, and the agreement check
    gap = float((cached - plain).abs().max())
    times: dict[str, list[float]] = {"no cache": [], "shared start": []}
    for _ in range(args.repeats):
        for name in times:
            start = time.perf_counter()
            score(name == "shared start")
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "codes": args.codes,
                "prompt_tokens": len(prompts[0]),
                "shared_tokens": next(i for i, (a, b) in enumerate(zip(*prompts[:2])) if a != b),
                "seconds_median": {k: round(v, 2) for k, v in med.items()},
                "ms_per_code": {k: round(1000 * v / args.codes, 1) for k, v in med.items()},
                "speedup_vs_no_cache": round(med["no cache"] / med["shared start"], 2),
                "max_abs_logp_difference": gap,
                "threads": torch.get_num_threads(),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
