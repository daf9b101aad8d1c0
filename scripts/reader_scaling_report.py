"""The data-scaling curve of issue 27 from a population's readers (scripts/reader_scaling.sh, or
any ``ditkit readers POP --setting nN@SEEDS:dit.max_train_diffs=N;...``): a table, a CSV and a
plot of held-out reading against training diffs, with the published Qwen3-4B curve beside it (a
different model and score: the share of hidden topics an LLM judge calls exact). Read from each
reader's own folder (POP/readers/NAME-sSEED), so any number of ``ditkit readers`` calls count;
every reader is scored on the same first --held held-out diffs. The methods that need no
reader (base question, guessed code, twenty questions, weight lens, the oracles), found in any
reader folder's evaluation (e.g. the shipped reader's, run with every method), are scored on the
same diffs, and each reader size is paired against them (per-diff DIT means over seeds).

    .venv/bin/python scripts/reader_scaling_report.py /work/runs/pop --held 20 \
        --out results/reader-scaling
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ditkit.evaluate.metrics import alias_match
from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl, write_bytes, write_json, write_text
from ditkit.reporting import Table
from ditkit.reporting.plots import png, pyplot

# Published: hidden topics on Qwen3-4B, share judged exact, by number of training diffs.
PAPER_4B = {36: 0.22, 72: 0.44, 145: 0.58, 291: 0.69, 582: 0.78, 1165: 0.89, 4660: 0.88}
READERS = ("dit", "dit_vote")
# DIT read once at 1.5x the diff's weights: the 1.5 answer of each dit_vote row (the scale was
# chosen on the first 50 held-out diffs, results/reader-scaling/read-scale.md).
READ_SCALE = 1.5
SCALED = f"dit_x{READ_SCALE:g}"
DIFF_CHECKS = ("gate_trigger", "gate_wrong_trigger", "gate_none")  # several rows per diff


def per_diff(folder: Path, held: list[str]) -> dict[str, dict[str, float]]:
    """``{method: {diff_id: alias_match}}`` of a reader folder's scored predictions on ``held``
    (the first prediction of each pair; diff checks have several and are left out)."""
    pred = folder / "eval" / "predictions.jsonl"
    found: dict[str, dict[str, float]] = {}
    for r in read_jsonl(pred) if pred.exists() else []:
        score = (r.get("scores") or {}).get("alias_match")
        if r["diff_id"] in held and score is not None and r["method"] not in DIFF_CHECKS:
            found.setdefault(r["method"], {}).setdefault(r["diff_id"], float(score))
    return found


def baselines(folders: list[Path], held: list[str]) -> dict[str, dict[str, float]]:
    """Every method that needs no reader, scored on all of ``held`` in some folder; one asked
    of diffs multiplied at read time (``eval.diff_scale`` S) is named ``METHOD_xS``."""
    found: dict[str, dict[str, float]] = {}
    for folder in folders:
        if not (folder / "config.json").exists():
            continue
        scale = json.loads((folder / "config.json").read_text())["eval"].get("diff_scale", 1.0)
        for method, scores in per_diff(folder, held).items():
            if method not in READERS and len(scores) == len(held):
                found.setdefault(method if scale == 1 else f"{method}_x{scale:g}", scores)
    return found


def scaled_reads(rows: list[dict], names: dict[str, list[str]]) -> dict[str, float]:
    """``{diff_id: alias match}`` of the `READ_SCALE` answer in each dit_vote row's votes."""
    out = {}
    for r in rows:
        answers = [a for s, _, a in r.get("votes", []) if s == READ_SCALE]
        if r["method"] == "dit_vote" and answers:
            out[r["diff_id"]] = float(alias_match(answers[0], names[r["diff_id"]]))
    return out


def reader_row(
    folder: Path, held: list[str], train_names: list[set[str]], names: dict[str, list[str]]
) -> dict | None:
    """One reader's held-out score per method on ``held`` (``SCALED`` where its votes hold that
    scale), its training-diff reading, wall time and the held-out misses naming one of its
    training labels; None if not finished (or read at another multiplier: not a plain read)."""
    if not (folder / "config.json").exists():
        return None
    cfg = json.loads((folder / "config.json").read_text())
    size = cfg["dit"].get("max_train_diffs")
    if cfg["eval"].get("diff_scale", 1.0) != 1:
        return None
    if cfg["dit"]["adapter"] == "shipped":
        size = 0  # the shipped reader: a reference line, not a point of the curve
    pred = folder / "eval" / "predictions.jsonl"
    if size is None or not pred.exists():
        return None
    rows = [r for r in read_jsonl(pred) if r["diff_id"] in set(held)]
    labels = set().union(*train_names[:size]) if size else set()
    out = {"train_diffs": size, "seed": cfg["dit"].get("seed"), "per_diff": {}}
    for method in READERS:
        mine = [r for r in rows if r["method"] == method]
        scored = {r["diff_id"] for r in mine if "alias_match" in (r.get("scores") or {})}
        if len(scored) < len(held) or len(mine) > len(scored):  # not read, or not scored yet
            return None
        out[method] = statistics.mean(float(r["scores"]["alias_match"]) for r in mine)
        out["per_diff"][method] = {r["diff_id"]: float(r["scores"]["alias_match"]) for r in mine}
        misses = [r for r in mine if not r["scores"]["alias_match"]]
        named = [r for r in misses if any(n in r["answer"].lower() for n in labels)]
        out[f"{method}_misses_naming_a_training_label"] = len(named) / max(1, len(misses))
    scaled = scaled_reads(rows, names)
    if len(scaled) == len(held):
        out[SCALED] = statistics.mean(scaled.values())
        out["per_diff"][SCALED] = scaled
        misses = [d for d, v in scaled.items() if not v]
        answers = {r["diff_id"]: r for r in rows if r["method"] == "dit_vote"}
        named = [d for d in misses if any(
            n in a.lower() for s, _, a in answers[d]["votes"] if s == READ_SCALE for n in labels
        )]  # fmt: skip
        out[f"{SCALED}_misses_naming_a_training_label"] = len(named) / max(1, len(misses))
    reading = folder / "train_reading.json"
    out["train"] = json.loads(reading.read_text())["alias_match"] if reading.exists() else None
    out["seconds"] = json.loads((folder / "timings.json").read_text())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pop", type=Path, help="a population directory with readers/")
    ap.add_argument("--held", type=int, required=True, help="score the first N held-out diffs")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    jobs = read_jsonl(args.pop / "data" / "jobs.jsonl")
    held = [j["diff_id"] for j in jobs if j["split"] == "test"][: args.held]
    train_names = [
        {n.lower() for n in [j["topic"], *j.get("aliases", [])]}
        for j in jobs
        if j["split"] == "train"
    ]
    names = {j["diff_id"]: [j["topic"], *j.get("aliases", [])] for j in jobs}
    folders = sorted((args.pop / "readers").glob("*-s*"))
    readers = [r for f in folders if (r := reader_row(f, held, train_names, names)) is not None]
    others = baselines(folders, held)
    if not readers:
        raise SystemExit(f"{args.pop}/readers holds no finished dit.max_train_diffs reader")
    rows = []
    for size in sorted({r["train_diffs"] for r in readers}):
        group = [r for r in readers if r["train_diffs"] == size]
        for method in [m for m in (*READERS, SCALED) if all(m in r for r in group)]:
            values = [r[method] for r in group]
            mean_of = {d: statistics.mean(r["per_diff"][method][d] for r in group) for d in held}
            paired = {
                other: paired_difference([mean_of[d] for d in held], [scores[d] for d in held])
                for other, scores in others.items()
            }
            trains = [r["train"] for r in group if r["train"] is not None]
            rows.append({
                "train_diffs": size, "reader": method, "seeds": len(group),
                "held_out": round(statistics.mean(values), 3),
                "seed_low": round(min(values), 3), "seed_high": round(max(values), 3),
                "train": round(statistics.mean(trains), 3) if trains else None,
                "misses_naming_a_training_label": round(statistics.mean(
                    r[f"{method}_misses_naming_a_training_label"] for r in group), 3),
                "dit_seconds": round(statistics.median(r["seconds"].get("dit", 0) for r in group)),
                "eval_seconds": round(statistics.median(r["seconds"].get("eval", 0) for r in group)),
                "paired": paired,
            })  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    base_means = {m: statistics.mean(v.values()) for m, v in others.items()}
    write_json(args.out / "scaling.json", {
        "held_out": held, "readers": readers, "rows": rows, "baselines": base_means,
    })  # fmt: skip
    flat = [{k: v for k, v in r.items() if k != "paired"} for r in rows]
    write_text(
        args.out / "scaling.csv", Table(list(flat[0]), [list(r.values()) for r in flat]).to_csv()
    )
    lines = [
        f"DIT alias match on the population's first {len(held)} held-out diffs, by training "
        "diffs (mean over seeds, seed range); train: 30 of its training diffs; misses naming a "
        "training label: share of held-out misses; seconds: median per seed, DIT training and "
        "evaluation (one thread beside other jobs). Training diffs 0: the reader shipped until "
        "2026-12-07 (90 "
        "SEP-code diffs of another recipe; its train column reads the population's).",
        "",
        "| training diffs | reader | seeds | held-out | seed range | train | gap | misses naming "
        "a training label | s train | s eval |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        train = "-" if r["train"] is None else f"{r['train']:.2f}"
        gap = "-" if r["train"] is None else f"{r['train'] - r['held_out']:+.2f}"
        lines.append(
            f"| {r['train_diffs']} | {r['reader']} | {r['seeds']} | {r['held_out']:.2f} | "
            f"{r['seed_low']:.2f}-{r['seed_high']:.2f} | {train} | {gap} | "
            f"{r['misses_naming_a_training_label']:.2f} | {r['dit_seconds']} | "
            f"{r['eval_seconds']} |"
        )
    if others:
        by_mean = sorted(others, key=lambda m: -base_means[m])
        lines += [
            "",
            f"Methods without a reader on the same {len(held)} diffs (oracles know the trigger), "
            "and each reader size paired against them: mean over seeds minus the method, per "
            "diff (95% interval; wins / losses).",
            "",
            "| method | alias match | " + " | ".join(
                f"{r['reader']} n{r['train_diffs']} minus it" for r in rows if r["train_diffs"]
            ) + " |",
            "|---|---|" + "---|" * sum(1 for r in rows if r["train_diffs"]),
        ]  # fmt: skip
        for m in by_mean:
            cells = []
            for r in rows:
                if r["train_diffs"]:
                    p = r["paired"][m]
                    lo, hi = p["ci95"]
                    cells.append(f"{p['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] "
                                 f"{p['wins']}/{p['losses']}")  # fmt: skip
            lines.append(f"| {m} | {base_means[m]:.2f} | " + " | ".join(cells) + " |")
    write_text(args.out / "scaling.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for method, style in zip((*READERS, SCALED), (":", "-.", (0, (1, 3)))):
        shipped = [r for r in rows if r["reader"] == method and r["train_diffs"] == 0]
        if shipped:
            ax.axhline(shipped[0]["held_out"], color="grey", ls=style, lw=1,
                       label=f"shipped reader, {method}")  # fmt: skip
    for method, marker in zip((*READERS, SCALED), "osD"):
        mine = [r for r in rows if r["reader"] == method and r["train_diffs"]]
        err = [[r["held_out"] - r["seed_low"] for r in mine],
               [r["seed_high"] - r["held_out"] for r in mine]]  # fmt: skip
        ax.errorbar([r["train_diffs"] for r in mine], [r["held_out"] for r in mine], yerr=err,
                    marker=marker, capsize=3, label=f"SmolLM2-135M, {method} (alias match)")  # fmt: skip
    for method, colour in (("base_question", "tab:red"),
                           ("base_question_guessed_code", "tab:purple"),
                           (f"base_question_x{READ_SCALE:g}", "tab:orange")):  # fmt: skip
        if method in base_means:
            ax.axhline(base_means[method], color=colour, ls="--", lw=1,
                       label=method.replace("_", " ") + " (no reader)")  # fmt: skip
    ax.plot(list(PAPER_4B), list(PAPER_4B.values()), "k--", marker="x",
            label="published Qwen3-4B (judged exact)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training diffs")
    ax.set_ylabel("held-out topics named")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    write_bytes(args.out / "scaling.png", png(fig))


if __name__ == "__main__":
    main()
