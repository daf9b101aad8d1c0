"""Weight symmetries on the embedded model: are attacked checkpoints read, and does alignment fix it?

For each of the first N test diffs of a run: merge it into a full checkpoint of the base model,
apply every transform of `ditkit.attack` (seed = the diff's place), then read three diffs with
one DIT adapter: the original, the attacked checkpoint minus the base (unaligned), and the aligned
checkpoint minus the base. Records per diff: DIT's three answers, whether each names the label,
the largest per-module relative error of the aligned diff, and seconds for alignment and for
`describe`. Writes OUT/symmetry.jsonl (resumable: finished diffs are kept) and OUT/summary.md.

    .venv/bin/python scripts/symmetry_experiment.py RUN_DIR --n 20 --out results/symmetry
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from ditkit import lora
from ditkit.align import align
from ditkit.attack import KINDS, attack
from ditkit.describe import describe
from ditkit.diffs import load_diff
from ditkit.diffs.checkpoint import diff_from_finetune
from ditkit.evaluate.metrics import alias_match
from ditkit.files import append_jsonl, read_jsonl, write_text
from ditkit.models import load_model
from ditkit.shipped import load_shipped


def merged(base, diff):
    """A full checkpoint: the base with ``diff`` added to its weights."""
    ft = copy.deepcopy(base)
    with torch.no_grad():
        for n in diff.modules:
            ft.get_submodule(n).weight += diff.delta_weight(n).to(torch.float32)
    return ft


def one(base, tok, adapter, path: Path, seed: int) -> dict:
    lora.remove(base)  # the previous diff's reading wrapped its projections
    diff = load_diff(path)
    names = [diff.meta["topic"], *diff.meta.get("aliases", [])]
    ft = merged(base, diff)
    attack(ft, KINDS, seed=seed)
    unaligned, _ = diff_from_finetune(base, ft)
    start = time.time()
    report = align(ft, base, rank="auto")
    align_s = time.time() - start
    aligned, _ = diff_from_finetune(base, ft)
    errors = {
        n: float(
            (aligned.delta_weight(n) - diff.delta_weight(n)).norm() / diff.delta_weight(n).norm()
        )
        for n in diff.modules
    }
    start = time.time()
    original = describe(base, tok, [diff], adapter)[0]
    describe_s = time.time() - start
    attacked_answer, aligned_answer = describe(base, tok, [unaligned, aligned], adapter)
    return {
        "diff": path.name, "label": diff.meta["topic"], "seed": seed,
        "original": original, "unaligned": attacked_answer, "aligned": aligned_answer,
        "hit": {k: bool(alias_match(a, names)) for k, a in
                (("original", original), ("unaligned", attacked_answer), ("aligned", aligned_answer))},
        "unaligned_same": attacked_answer == original, "aligned_same": aligned_answer == original,
        "max_module_error": max(errors.values()), "median_module_error": sorted(errors.values())[len(errors) // 2],
        "align_seconds": round(align_s, 1), "describe_seconds": round(describe_s, 1),
        "iterations": report["iterations"],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "symmetry.jsonl"
    done = {r["diff"] for r in read_jsonl(path)} if path.exists() else set()
    base, tok = load_model("smollm2-135m")
    adapter, _, _ = load_shipped("smollm2-135m")
    diffs = sorted((args.run / "diffs" / "test").glob("*.safetensors"))[: args.n]
    for i, p in enumerate(diffs):
        if p.name not in done:
            row = one(base, tok, adapter, p, seed=i)
            append_jsonl(path, [row])
            print(row, flush=True)
    rows = read_jsonl(path)
    n = len(rows)

    def share(key: str) -> str:
        return f"{sum(r[key] for r in rows)}/{n}"

    lines = [
        f"{n} held-out diffs merged into checkpoints of SmolLM2-135M, all {len(KINDS)} transforms:",
        f"- DIT's answer unchanged by the attack (unaligned): {share('unaligned_same')}",
        f"- DIT's answer unchanged after alignment: {share('aligned_same')}",
        "- DIT names the topic: original {}, unaligned {}, aligned {}".format(
            *(sum(r["hit"][k] for r in rows) for k in ("original", "unaligned", "aligned"))
        ),
        f"- largest per-module relative error of the aligned diff: {max(r['max_module_error'] for r in rows):.4f}",
        "- seconds per checkpoint: alignment {:.0f} (median), describe {:.1f}".format(
            sorted(r["align_seconds"] for r in rows)[n // 2],
            sorted(r["describe_seconds"] for r in rows)[n // 2],
        ),
    ]
    write_text(args.out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
