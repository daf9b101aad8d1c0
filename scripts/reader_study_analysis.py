"""The reader study against the shipped adapter and the oracle, per held-out diff.

After ``ditkit readers RUN ...`` (``RUN/readers/readers.json``) and a read of the same test diffs by the shipped adapter in
``RUN/readers/shipped`` (with the base question + trigger oracle and the gating check), this
compares every (setting, reader) with the shipped adapter and with the oracle on the same diffs:
each diff's score is its mean over the setting's seeds, paired against the other method's score
(`stats.paired_difference`; the normal interval, as seed means are not 0/1). Writes
``RUN/readers/analysis.json`` and ``RUN/readers/analysis.md`` and prints the table.

    .venv/bin/python scripts/reader_study_analysis.py /work/runs/r168/run
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ditkit.evaluate.stats import paired_difference, summarize
from ditkit.files import read_jsonl, write_json
from ditkit.shipped import shipped_training_topics

METRIC = "alias_match"


def per_diff(rows: list[dict], method: str) -> dict[str, float]:
    """``method``'s mean ``METRIC`` per diff (several rows per diff for the gating check)."""
    hits: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["method"] == method and METRIC in (r.get("scores") or {}):
            hits[r["diff_id"]].append(float(r["scores"][METRIC]))
    return {d: sum(v) / len(v) for d, v in hits.items()}


def seed_means(folder: Path, setting: str, method: str) -> tuple[dict[str, float], list[float]]:
    """Per-diff scores averaged over every finished seed of ``setting``, and each seed's mean."""
    runs = sorted(folder.glob(f"{setting}-s*/eval/predictions.jsonl"))
    per_seed = [per_diff(read_jsonl(p), method) for p in runs]
    per_seed = [s for s in per_seed if s]
    if not per_seed:
        return {}, []
    ids = set.intersection(*(set(s) for s in per_seed))
    means = {d: sum(s[d] for s in per_seed) / len(per_seed) for d in ids}
    return means, [sum(s.values()) / len(s) for s in per_seed]


def shipped_collapse(rows: list[dict]) -> float:
    """The share of the shipped adapter's misses that name one of its own training topics."""
    names = [n.lower() for n in shipped_training_topics("smollm2-135m")]
    misses = [r for r in rows if r["method"] == "dit" and not r["scores"][METRIC]]
    hits = [r for r in misses if any(n in r["answer"].lower() for n in names)]
    return len(hits) / len(misses) if misses else 0.0


def compare(a: dict[str, float], b: dict[str, float]) -> dict:
    ids = sorted(set(a) & set(b))
    return paired_difference([a[d] for d in ids], [b[d] for d in ids], proportion=False)


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    folder = args.run / "readers"
    shipped_rows = read_jsonl(folder / "shipped" / "eval" / "predictions.jsonl")
    shipped = per_diff(shipped_rows, "dit")
    oracle = per_diff(shipped_rows, "base_question_trigger")
    checks = {m: summarize(list(per_diff(shipped_rows, m).values()), proportion=False)["mean"]
              for m in ("gate_trigger", "gate_wrong_trigger", "gate_none", "base_question")}  # fmt: skip
    summary = json.loads((folder / "readers.json").read_text())
    rows = [
        {"setting": "shipped", "reader": "dit", "held_out": sum(shipped.values()) / len(shipped),
         "seed_means": [], "collapse": shipped_collapse(shipped_rows), "vs_shipped": None,
         "vs_oracle": compare(shipped, oracle)}
    ]  # fmt: skip
    for r in summary["rows"]:
        means, seeds = seed_means(folder, r["setting"], r["reader"])
        rows.append(
            {
                "setting": r["setting"],
                "reader": r["reader"],
                "held_out": sum(means.values()) / len(means),
                "seed_means": seeds,
                "train": r["train"],
                "gap": r["gap"],
                "collapse": r["misses_naming_a_training_label"],
                "vs_shipped": compare(means, shipped),
                "vs_oracle": compare(means, oracle),
            }
        )
    out = {"metric": METRIC, "n": len(shipped), "oracle": sum(oracle.values()) / len(oracle),
           "diff_checks": checks, "rows": rows}  # fmt: skip
    write_json(folder / "analysis.json", out)
    lines = [
        f"{len(shipped)} held-out diffs; oracle (base question + trigger) {out['oracle']:.2f}; "
        + ", ".join(f"{k} {v:.2f}" for k, v in checks.items()),
        "",
        "| setting | reader | seeds | held-out (seed range) | train | gap | misses naming a "
        "training label | vs shipped [95% CI] | vs oracle [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def paired(p: dict | None) -> str:
        if p is None:
            return "-"
        lo, hi = p["ci95"]
        return f"{p['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({p['wins']}/{p['losses']})"

    for r in rows:
        seeds = r["seed_means"]
        spread = f" ({min(seeds):.2f}-{max(seeds):.2f})" if seeds else ""
        lines.append(
            f"| {r['setting']} | {r['reader']} | {len(seeds) or 1} | {r['held_out']:.2f}{spread} "
            f"| {_num(r.get('train'))} | {_num(r.get('gap'), '+.2f')} "
            f"| {_num(r.get('collapse'))} | {paired(r['vs_shipped'])} "
            f"| {paired(r['vs_oracle'])} |"
        )
    (folder / "analysis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
