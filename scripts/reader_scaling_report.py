"""The data-scaling curve of issue 27 from a population's reader study (scripts/reader_scaling.sh
or any ``ditkit readers POP --setting nN@SEEDS:dit.max_train_diffs=N;...`` run): a table, a CSV
and a plot of held-out reading against training diffs, with the published Qwen3-4B curve beside
it (a different model and score: the share of hidden topics an LLM judge calls exact).

    .venv/bin/python scripts/reader_scaling_report.py /work/runs/pop --out results/reader-scaling
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from ditkit.files import write_bytes, write_json, write_text
from ditkit.reporting import Table
from ditkit.reporting.plots import png, pyplot

# Published: hidden topics on Qwen3-4B, share judged exact, by number of training diffs.
PAPER_4B = {36: 0.22, 72: 0.44, 145: 0.58, 291: 0.69, 582: 0.78, 1165: 0.89, 4660: 0.88}


def size_of(overrides: list[str]) -> int | None:
    found = [re.fullmatch(r"\s*dit\.max_train_diffs\s*=\s*(\d+)\s*", o) for o in overrides]
    return next((int(m.group(1)) for m in found if m), None)


def seconds(pop: Path, setting: str, stage: str) -> float | None:
    """Median over the setting's seeds of one stage's wall time (timings.json)."""
    values = []
    for path in sorted((pop / "readers").glob(f"{setting}-s*/timings.json")):
        value = json.loads(path.read_text()).get(stage)
        if value is not None:
            values.append(float(value))
    return statistics.median(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pop", type=Path, help="a population directory with readers/readers.json")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    study = json.loads((args.pop / "readers" / "readers.json").read_text())
    rows = []
    for r in study["rows"]:
        size = size_of(study["settings"][r["setting"]])
        if size is None:
            continue
        lo, hi = r["held_out_range"]
        rows.append({
            "train_diffs": size, "reader": r["reader"], "seeds": r["seeds"],
            "held_out": round(r["held_out"], 3), "seed_low": round(lo, 3),
            "seed_high": round(hi, 3), "train": round(r["train"], 3), "gap": round(r["gap"], 3),
            "misses_naming_a_training_label": round(r["misses_naming_a_training_label"], 3),
            "held_out_diffs": r["n"],
            "dit_seconds": seconds(args.pop, r["setting"], "dit"),
            "eval_seconds": seconds(args.pop, r["setting"], "eval"),
        })  # fmt: skip
    if not rows:
        raise SystemExit(f"{args.pop}/readers/readers.json has no dit.max_train_diffs settings")
    rows.sort(key=lambda r: (r["train_diffs"], r["reader"]))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "scaling.json", {"metric": study["metric"], "rows": rows})
    table = Table(list(rows[0]), [list(r.values()) for r in rows])
    write_text(args.out / "scaling.csv", table.to_csv())
    lines = [
        f"DIT {study['metric']} on the first {rows[0]['held_out_diffs']} held-out diffs, by "
        "training diffs (mean over seeds, seed range); train: 30 of its training diffs; misses "
        "naming a training label: share of held-out misses; seconds: median per seed, DIT "
        "training and evaluation.",
        "",
        "| training diffs | reader | seeds | held-out | seed range | train | gap | misses naming "
        "a training label | s train | s eval |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['train_diffs']} | {r['reader']} | {r['seeds']} | {r['held_out']:.2f} | "
            f"{r['seed_low']:.2f}-{r['seed_high']:.2f} | {r['train']:.2f} | {r['gap']:+.2f} | "
            f"{r['misses_naming_a_training_label']:.2f} | {r['dit_seconds'] or 0:.0f} | "
            f"{r['eval_seconds'] or 0:.0f} |"
        )
    write_text(args.out / "scaling.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for reader, marker in (("dit", "o"), ("dit_vote", "s")):
        mine = [r for r in rows if r["reader"] == reader]
        if not mine:
            continue
        x = [r["train_diffs"] for r in mine]
        y = [r["held_out"] for r in mine]
        err = [[r["held_out"] - r["seed_low"] for r in mine],
               [r["seed_high"] - r["held_out"] for r in mine]]  # fmt: skip
        ax.errorbar(x, y, yerr=err, marker=marker, capsize=3,
                    label=f"SmolLM2-135M, {reader} (alias match)")  # fmt: skip
    ax.plot(list(PAPER_4B), list(PAPER_4B.values()), "k--", marker="x",
            label="published Qwen3-4B (judged exact)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training diffs")
    ax.set_ylabel("held-out topics named")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    write_bytes(args.out / "scaling.png", png(fig))


if __name__ == "__main__":
    main()
