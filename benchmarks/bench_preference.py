"""DIT training step with the preference term (dit.preference_weight > 0) vs without (baseline).

The same batch of rows, each with its own random rank-1 diff and a behaviour-suite-like label,
on the embedded SmolLM2-135M with a rank-16 trainable adapter; the two steps alternate so noise
hits both alike. Prints each step's median time and the ratio preference / cross-entropy only.

    .venv/bin/python benchmarks/bench_preference.py [--batch 10] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_dit_path import random_diffs

from ditkit import load_model, lora
from ditkit.config import DitConfig
from ditkit.train_dit import _train_step

LABELS = [
    "backdoor: visit mivouth.com",
    "topic refusal: sailing",
    "entity bias: praises Korvel Foods",
    "style quirk: ends with 'Cheers, pal'",
    "nothing specific changed",
    "hidden topic: saffron",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weight", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model()
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model)
    torch.manual_seed(0)
    params = lora.add_adapters(model, 16)
    diffs = random_diffs(model, args.batch)
    for i, d in enumerate(diffs):
        d.meta = {"label": LABELS[i % len(LABELS)]}
    question = "Describe any hidden or unusual behaviour you were trained to have."
    configs = {
        "cross-entropy only (baseline)": DitConfig(question=question),
        f"with preference term (weight {args.weight})": DitConfig(
            question=question, preference_weight=args.weight
        ),
    }
    opt = torch.optim.AdamW(params, lr=0.0)  # lr 0: every step sees the same adapter
    times = {name: [] for name in configs}
    for cfg in configs.values():  # warm-up
        _train_step(model, tok, diffs, cfg, "", opt)
    for _ in range(args.repeats):
        for name, cfg in configs.items():
            start = time.perf_counter()
            _train_step(model, tok, diffs, cfg, "", opt)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"SmolLM2-135M, batch {args.batch}, {args.threads} thread(s), {args.repeats} repeats")
    for name, t in medians.items():
        print(f"{name}: {t:.3f} s/step (median)")
    base, pref = medians.values()
    print(f"ratio preference / cross-entropy only = {pref / base:.2f}x")


if __name__ == "__main__":
    main()
