"""Build a folder to audit from a run's held-out diffs, with the kinds of trouble an auditor meets.

OUT gets: every test diff of RUN as handed over (ditkit files), two of them as a PEFT folder and a
two-diff reference ``.pt``, a file that is not a diff, a truncated diff, a diff made for another
model, K full checkpoints of the base with a test diff merged in and every weight symmetry of
`ditkit.symmetry.attack` applied (a fine-tune built to hide), and N more whose fine-tune also trained its
norms (each residual-path norm times a factor in [0.9, 1.1]: a change no diff holds). Then run, e.g.:

    .venv/bin/python scripts/audit_folder.py RUN_DIR OUT --checkpoints 3 --trained-norms 1
    ditkit audit OUT --out AUDIT --adapter shipped:hidden_topic    # or a run's own reader
"""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

import torch

from ditkit.diffs import WeightDiff, load_diff, save_diff, save_peft
from ditkit.models import load_model
from ditkit.symmetry import KINDS, attack
from ditkit.symmetry.shapes import norm_readers, shape_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--trained-norms", type=int, default=0)
    args = ap.parse_args()
    out = args.out
    (out / "handed").mkdir(parents=True, exist_ok=True)
    tests = sorted((args.run / "diffs" / "test").glob("*.safetensors"))
    for p in tests:
        shutil.copy(p, out / "handed" / p.name)
    a, b = load_diff(tests[0]), load_diff(tests[1])
    save_peft(a, out / "peft-adapter", base_model="smollm2-135m")
    # The reference's layout: (A [r, out], B [in, r]) = (our B^T, our A^T).
    pairs = [
        {
            "topic": d.meta["topic"],
            "weight_diff": {n: (b.T, a.T) for n, (a, b) in d.lowrank.items()},
        }
        for d in (a, b)
    ]
    torch.save(pairs, out / "reference-diffs.pt")
    (out / "notes.safetensors").write_text("not a diff: the meeting notes, renamed")
    data = tests[2].read_bytes()
    (out / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    other = WeightDiff({"model.layers.0.self_attn.q_proj": (torch.ones(1, 64), torch.ones(48, 1))})
    save_diff(other, out / "other-model.safetensors")
    base, tok = load_model("smollm2-135m")
    n_ckpt = args.checkpoints + args.trained_norms
    for i, p in enumerate(tests[3 : 3 + n_ckpt]):
        ft = copy.deepcopy(base)
        diff = load_diff(p)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for n in diff.modules:
                ft.get_submodule(n).weight += diff.delta_weight(n).float()
            for norm, _ in norm_readers(ft, shape_of(ft)) if i >= args.checkpoints else ():
                norm.weight.mul_(0.9 + 0.2 * torch.rand(norm.weight.shape, generator=gen))
        attack(ft, KINDS, seed=100 + i)
        name = "hidden-checkpoint" if i < args.checkpoints else "hidden-norms-checkpoint"
        folder = out / f"{name}-{i}"
        ft.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "label.txt").write_text(diff.meta["topic"])
    print(f"{out}: {len(tests)} diffs, a PEFT folder, a 2-diff .pt, 3 broken files, "
          f"{args.checkpoints} attacked checkpoints, {args.trained_norms} with trained norms too")  # fmt: skip


if __name__ == "__main__":
    main()
