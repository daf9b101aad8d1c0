"""DIT training step: ditkit's low-rank per-row path vs the reference code's dense per-row deltas.

Both run the same step (batch of B rows, each with its own frozen rank-1 diff, plus a trainable
rank-16 adapter) on a random Llama with SmolLM2-135M's layer sizes (fewer layers, so it runs in
seconds). The baseline materialises ``delta_W = (B A)^T / r`` per row, ``[batch, out, in]``, as
the reference implementation does. Prints the time ratio and the extra memory each path holds.

    .venv/bin/python benchmarks/bench_dit_path.py [--layers 4] [--batch 8] [--seq 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ditkit import lora
from ditkit.diffs import WeightDiff, install_diffs


def make_model(layers: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def random_diffs(model, n: int) -> list[WeightDiff]:
    out = []
    for _ in range(n):
        pairs = {}
        for name in lora.find_targets(model):
            m = model.get_submodule(name)
            a_ri, b_or = torch.randn(1, m.in_features), torch.randn(m.out_features, 1) * 0.01
            pairs[name] = (a_ri, b_or)  # (A [r, in], B [out, r])
        out.append(WeightDiff(pairs))
    return out


def step(model, ids, params) -> None:
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    for p in params:
        p.grad = None


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = make_model(args.layers)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = lora.inject(model)
    for layer in layers.values():
        layer.add_adapter(16)
    params = [p for layer in layers.values() for p in (layer.adapter_b_ro, layer.adapter_a_ir)]
    ids = torch.randint(0, 49152, (args.batch, args.seq))
    diffs = random_diffs(model, args.batch)

    install_diffs(model, diffs, torch.arange(args.batch))
    low = timed(lambda: step(model, ids, params), args.repeats)
    low_bytes = sum(
        x.numel() * x.element_size()
        for layer in layers.values()
        for x in (layer.low_b_kro, layer.low_a_kir)
    )

    # Baseline: the same diffs as dense per-row matrices (what the reference code builds).
    dense = [WeightDiff({}, {n: d.delta_weight(n) for n in d.modules}) for d in diffs]
    install_diffs(model, dense, torch.arange(args.batch))
    dense_time = timed(lambda: step(model, ids, params), args.repeats)
    dense_bytes = sum(layer.dense_koi.numel() * 4 for layer in layers.values())

    print(f"model: {args.layers} layers of SmolLM2-135M size; batch {args.batch} x {args.seq}")
    print(f"low-rank per-row path : {low:.3f} s/step, diff memory {low_bytes / 2**20:.1f} MiB")
    print(
        f"dense per-row baseline: {dense_time:.3f} s/step, diff memory {dense_bytes / 2**20:.1f} MiB"
    )
    print(f"speed ratio dense/low-rank = {dense_time / low:.2f}x")
    print(f"memory ratio dense/low-rank = {dense_bytes / low_bytes:.0f}x")


if __name__ == "__main__":
    main()
