"""Weight symmetries on the embedded model: are attacked checkpoints read, and does alignment fix it?

For each of the first N test diffs of a run and each attack (by default every transform of
`ditkit.symmetry.attack` together; ``--each`` adds each transform alone): merge the diff into a full
checkpoint of the base model, apply the attack (seed = the diff's place), then read three diffs
with one DIT adapter: the original, the attacked checkpoint minus the base (unaligned), and the
aligned checkpoint minus the base. Records per (diff, attack): DIT's three answers, whether each
names the label, the largest per-module relative error of the aligned diff, and seconds for
alignment and for `describe`. Attacks run diff by diff, so a stopped run has as many diffs for
every attack. Writes OUT/symmetry.jsonl (resumable: finished rows are kept) and OUT/summary.md.

    .venv/bin/python scripts/symmetry_experiment.py RUN_DIR --n 20 --out results/symmetry
    .venv/bin/python scripts/symmetry_experiment.py RUN_DIR --n 20 --each --out results/symmetry
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from ditkit import lora
from ditkit.diffs import load_diff
from ditkit.diffs.checkpoint import diff_from_finetune
from ditkit.evaluate.metrics import alias_match
from ditkit.files import append_jsonl, read_jsonl, write_text
from ditkit.models import load_model
from ditkit.reader import describe
from ditkit.shipped import load_shipped
from ditkit.symmetry import KINDS, align, attack


def merged(base, diff):
    """A full checkpoint: the base with ``diff`` added to its weights."""
    ft = copy.deepcopy(base)
    with torch.no_grad():
        for n in diff.modules:
            ft.get_submodule(n).weight += diff.delta_weight(n).to(torch.float32)
    return ft


ALL = "all"


def one(base, tok, adapter, path: Path, seed: int, kinds: str) -> dict:
    lora.remove(base)  # the previous diff's reading wrapped its projections
    diff = load_diff(path)
    names = [diff.meta["topic"], *diff.meta.get("aliases", [])]
    ft = merged(base, diff)
    attack(ft, KINDS if kinds == ALL else [kinds], seed=seed)
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
        "diff": path.name, "kinds": kinds, "label": diff.meta["topic"], "seed": seed,
        "original": original, "unaligned": attacked_answer, "aligned": aligned_answer,
        "hit": {k: bool(alias_match(a, names)) for k, a in
                (("original", original), ("unaligned", attacked_answer), ("aligned", aligned_answer))},
        "unaligned_same": attacked_answer == original, "aligned_same": aligned_answer == original,
        "max_module_error": max(errors.values()), "median_module_error": sorted(errors.values())[len(errors) // 2],
        "align_seconds": round(align_s, 1), "describe_seconds": round(describe_s, 1),
        "iterations": report["iterations"],
    }  # fmt: skip


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def summary(rows: list[dict]) -> list[str]:
    """The all-together lines, then a table with one row per attack."""
    together = [r for r in rows if r["kinds"] == ALL]
    n = len(together)
    lines = []
    if together:
        lines = [
            f"{n} held-out diffs merged into checkpoints of SmolLM2-135M, all {len(KINDS)} transforms:",
            f"- DIT's answer unchanged by the attack (unaligned): {sum(r['unaligned_same'] for r in together)}/{n}",
            f"- DIT's answer unchanged after alignment: {sum(r['aligned_same'] for r in together)}/{n}",
            "- DIT names the topic: original {}, unaligned {}, aligned {}".format(
                *(sum(r["hit"][k] for r in together) for k in ("original", "unaligned", "aligned"))
            ),
            f"- largest per-module relative error of the aligned diff: {max(r['max_module_error'] for r in together):.4f}",
            "- seconds per checkpoint: alignment {:.0f} (median), describe {:.1f}".format(
                _median([r["align_seconds"] for r in together]),
                _median([r["describe_seconds"] for r in together]),
            ),
            "",
        ]  # fmt: skip
    lines += [
        "| attack | diffs | DIT unchanged, unaligned | DIT unchanged, aligned | topic named (orig / unaligned / aligned) "
        "| largest module error, aligned | alignment s (median) | describe s (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for kinds in [*KINDS, ALL]:
        rs = [r for r in rows if r["kinds"] == kinds]
        if not rs:
            continue
        m = len(rs)
        named = " / ".join(
            str(sum(r["hit"][k] for r in rs)) for k in ("original", "unaligned", "aligned")
        )
        lines.append(
            f"| {'all seven' if kinds == ALL else kinds} | {m} | {sum(r['unaligned_same'] for r in rs)}/{m} "
            f"| {sum(r['aligned_same'] for r in rs)}/{m} | {named} "
            f"| {max(r['max_module_error'] for r in rs):.2e} | {_median([r['align_seconds'] for r in rs]):.0f} "
            f"| {_median([r['describe_seconds'] for r in rs]):.1f} |"
        )  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--each", action="store_true", help="also attack with each transform alone")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "symmetry.jsonl"
    done = {(r["diff"], r.get("kinds", ALL)) for r in read_jsonl(path)} if path.exists() else set()
    base, tok = load_model("smollm2-135m")
    adapter, _, _ = load_shipped("smollm2-135m", task="hidden_topic")
    diffs = sorted((args.run / "diffs" / "test").glob("*.safetensors"))[: args.n]
    attacks = [*KINDS, ALL] if args.each else [ALL]
    for i, p in enumerate(diffs):
        for kinds in attacks:
            if (p.name, kinds) not in done:
                row = one(base, tok, adapter, p, seed=i, kinds=kinds)
                append_jsonl(path, [row])
                print(row, flush=True)
    rows = [{**r, "kinds": r.get("kinds", ALL)} for r in read_jsonl(path)]
    lines = summary(rows)
    write_text(args.out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
