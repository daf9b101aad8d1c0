"""How well `ditkit trigger` finds the trigger of held-out diffs (issue 29): the SEP code of
hidden-topic diffs, or the trigger word of the behaviour suite's backdoor diffs.

For each diff on disk in POP/diffs/test: DIT's description (the shipped reader, or --reader;
with --read-scales, its answers at each scale, all searched for),
then the searches: guided by DIT's description, by the truth (the topic or the payload: the
upper bound), by the divergence score (no DIT), and combined (DIT's description, checked by the
divergence: its two searches are the first and third, reused), over the 1,000 code prefixes (hidden topics)
or the first --words whole-word tokens (backdoors); then each search's top-ranked candidate, the
diff's own trigger and one random candidate (chance) asked held-out check questions that no
search saw. A candidate is a *working* trigger when it opens the behaviour on at least
max(2, own - 1) of them.

    .venv/bin/python scripts/trigger_study.py /work/pop --diffs 30 --out results/trigger-search \
        --work /work/runs/trigger-study --threads 1
    .venv/bin/python scripts/trigger_study.py RUN --out OUT --work WORK --methods truth,divergence
        (a behaviours run: its backdoor diffs; "dit" needs a behaviour-suite --reader)

Resumable: each search keeps its rows under WORK, each finished diff is a line of
OUT/per_diff.jsonl; rerun the same command to go on. OUT gets summary.json, table.md and
gap_vs_rank.png from every finished diff.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from ditkit import load_diff, load_model, load_reader
from ditkit.evaluate.metrics import alias_match
from ditkit.files import append_jsonl, claim_settings, read_jsonl, write_json, write_text
from ditkit.reader import ask, describe
from ditkit.shipped import run_task_reader
from ditkit.tasks.behaviours.families import parse_description
from ditkit.tasks.hidden_topic import code_words, load_questions
from ditkit.trigger_search import (
    TriggerSearchConfig,
    behaviour_content,
    candidates,
    search,
    trigger_text,
)

METHODS = ("dit", "truth", "divergence", "combined")


def secret(job: dict) -> tuple[str, str, list[str]]:
    """``(own trigger key, the truth a search may be guided by, names that show it)``: a
    hidden-topic job's prefix and topic, or a backdoor job's trigger word and payload."""
    if "prefix" in job:
        names = [job["topic"], *job.get("aliases", [])]
        if job.get("trigger_kind") == "word":  # the code-words space's keys are the words
            return code_words()[int(job["prefix"])], job["topic"], names
        return job["prefix"], job["topic"], names
    return job["content"]["trigger"], job["content"]["key"], list(job["names"])


def check(model, tok, diff, names, keys, questions, system, tokens, space) -> dict[str, int]:
    """Held-out answers naming the behaviour behind each key ("" = no trigger)."""
    prompts = [(k, trigger_text(space, k, q) if k else q) for k in keys for q in questions]
    answers = ask(model, tok, [diff] * len(prompts), [p for _, p in prompts],
                  max_new_tokens=tokens, system=system, desc="check")  # fmt: skip
    hits = dict.fromkeys(keys, 0)
    for (k, _), a in zip(prompts, answers):
        hits[k] += int(alias_match(a, names))
    return hits


def study_diff(model, tok, reader, job, path, args, heldout, system) -> dict:
    diff = load_diff(path)
    own_key, truth, names = secret(job)
    rng = random.Random(f"trigger-study|{job['diff_id']}")
    checks = rng.sample(heldout, args.check_questions)
    probes = rng.sample([q for q in heldout if q not in checks and len(q) <= 80], args.questions)
    start = time.time()
    scaled = [diff if s == 1 else diff.scaled(s) for s in args.read_scales]
    read = describe(model, tok, scaled, reader, max_new_tokens=20) if reader else [""]
    if args.space == "words":  # a behaviour-suite reader: its descriptions' content
        read = [parse_description(a)[1] for a in read]
    said = read[0] if len(read) == 1 else read  # several: the search tries each
    row = {
        "diff_id": job["diff_id"],
        "truth": truth,
        "own_key": own_key,
        "dit": read[0],
        "dit_names_truth": alias_match(read[0], names),
        "dit_seconds": round(time.time() - start, 1),
    }
    if len(read) > 1:
        row.update(dit_scales=args.read_scales, dit_all=read)
        row["dit_any_names_truth"] = any(alias_match(a, names) for a in read)
    space = candidates(args.space, tok, args.words)
    chance = rng.choice([k for k in space if k != own_key])
    tops, searches = {}, {}
    for method in args.methods:
        score = {"divergence": "divergence", "combined": "combined"}.get(method, "behaviour")
        cfg = TriggerSearchConfig(
            space=args.space, words=args.words, score=score,
            probe_questions=probes, refine=args.refine, top=3, system=system,
        )  # fmt: skip
        behaviour = {"dit": said, "truth": truth, "combined": said}.get(method)
        # Where DIT said the truth itself, the truth-guided search is the same search: reuse it.
        same = "dit" in args.methods and {behaviour_content(a).lower() for a in read} == {
            truth.lower()
        }
        same = same and method == "truth"
        folder = args.work / job["diff_id"] / ("dit" if same else method)
        if method == "combined":  # its two searches are the DIT-guided and divergence ones
            for part, other in (("behaviour", "dit"), ("divergence", "divergence")):
                link = folder / part
                if not link.exists():
                    (folder.parent / other).mkdir(parents=True, exist_ok=True)
                    folder.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(Path("..") / other, target_is_directory=True)
        found = search(model, tok, diff, cfg, folder, said if same else behaviour)
        tops[method] = found.ranking[0]["key"]
        searches[method] = {
            "top": [r["key"] for r in found.ranking[:10]],
            "own_rank": found.rank_of(own_key),
            "seconds": found.seconds,
            "rows_scored": found.rows_scored,
            "evidence": found.ranking[0].get("evidence"),
        }
        if found.confirmed is not None:
            searches[method]["confirmed"] = found.confirmed
    keys = list(dict.fromkeys([own_key, chance, "", *tops.values()]))
    hits = check(model, tok, diff, names, keys, checks, system, args.max_new_tokens, args.space)
    own = hits[own_key]
    need = max(2, own - 1)
    row.update(own=own, chance=hits[chance], none=hits[""], of=len(checks), need=need)
    row.update(searches=searches, candidates=len(space), chance_working=hits[chance] >= need)
    for method in args.methods:
        searches[method]["top_hits"] = hits[tops[method]]
        searches[method]["working"] = hits[tops[method]] >= need
    row["seconds"] = round(time.time() - start, 1)
    return row


def summarise(rows: list[dict], out: Path) -> None:
    """summary.json, table.md and the gap-vs-rank plot from the finished diffs."""
    n = len(rows)
    for r in rows:  # rows written before the truth-guided search had that name
        if "topic" in r["searches"]:
            r["searches"]["truth"] = r["searches"].pop("topic")
    # Gated: the own code opens the topic on at least 2 more check questions than a random one.
    gated = [r for r in rows if r["own"] - r["chance"] >= 2]
    table = {}
    methods = [m for m in METHODS if m in rows[0]["searches"]]
    size = rows[0].get("candidates", 1000)

    def cost(r: dict, method: str) -> float:
        """A search's seconds as if run alone: the combined one reuses the DIT-guided search
        and, where DIT is not confirmed, the divergence one, so their seconds count too."""
        found = r["searches"][method]
        if method != "combined" or "dit" not in r["searches"]:
            return found["seconds"]
        fallback = r["searches"].get("divergence", {}) if found.get("confirmed") is False else {}
        return found["seconds"] + r["searches"]["dit"]["seconds"] + fallback.get("seconds", 0.0)

    for method in methods:
        ranks = [r["searches"][method]["own_rank"] for r in rows]
        table[method] = {
            "top1_working": sum(r["searches"][method]["working"] for r in rows) / n,
            "top1_working_gated": sum(r["searches"][method]["working"] for r in gated)
            / max(1, len(gated)),
            "exact_top1": sum(k == 1 for k in ranks) / n,
            "exact_top10": sum(k <= 10 for k in ranks) / n,
            "median_rank": statistics.median(ranks),
            # The median: a search resumed from rows on disk, or reused, takes seconds only.
            "seconds_per_diff": statistics.median(cost(r, method) for r in rows),
        }
    table["chance"] = {
        "top1_working": sum(r["chance_working"] for r in rows) / n,
        "top1_working_gated": sum(r["chance_working"] for r in gated) / max(1, len(gated)),
        "exact_top1": 1 / size,
        "exact_top10": 10 / size,
        "median_rank": (size + 1) / 2,
        "seconds_per_diff": 0.0,
    }
    summary = {
        "diffs": n,
        "gated_diffs": len(gated),
        "dit_names_truth": sum(r.get("dit_names_truth", r.get("dit_names_topic", 0)) for r in rows)
        / n,
        # With --read-scales: how often one of DIT's answers (any scale) names it.
        "dit_any_names_truth": sum(r.get("dit_any_names_truth", r["dit_names_truth"]) for r in rows)
        / n,
        "own_rate": sum(r["own"] for r in rows) / sum(r["of"] for r in rows),
        "random_rate": sum(r["chance"] for r in rows) / sum(r["of"] for r in rows),
        "none_rate": sum(r["none"] for r in rows) / sum(r["of"] for r in rows),
        "methods": table,
    }
    write_json(out / "summary.json", summary)
    lines = [
        f"{n} held-out diffs ({len(gated)} gated: the own trigger opens the behaviour on >= 2 "
        f"more of {rows[0]['of']} check questions than a random one; {size:,} candidates); DIT "
        f"names it for {summary['dit_names_truth']:.0%} (at one of its read scales "
        f"{summary['dit_any_names_truth']:.0%}); shown behind own / random / none: "
        f"{summary['own_rate']:.0%} / {summary['random_rate']:.0%} / {summary['none_rate']:.0%}",
        "",
        "| search | top-1 works (all) | top-1 works (gated) | exact top-1 | exact top-10 | "
        "median rank of the own code | median s per search (combined: with the searches it reuses) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, t in table.items():
        lines.append(
            f"| {method} | {t['top1_working']:.0%} | {t['top1_working_gated']:.0%} | "
            f"{t['exact_top1']:.1%} | {t['exact_top10']:.0%} | {t['median_rank']:g} | "
            f"{t['seconds_per_diff']:.0f} |"
        )
    lines += ["", "| diff | truth | DIT's answers (distinct) | own trigger's rank: "
              + " / ".join(methods) + " | own / random / none (of "
              + f"{rows[0]['of']}) |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        said = " / ".join(
            dict.fromkeys(" ".join(a.split()) for a in r.get("dit_all") or [r["dit"]])
        )
        ranks = " / ".join(str(r["searches"][m]["own_rank"]) for m in methods)
        if r["searches"].get("combined", {}).get("confirmed") is False:
            ranks += " (combined: not confirmed, divergence)"
        lines.append(f"| {r['diff_id']} | {r['truth']} | {said.replace('|', '/')!s:.80} | "
                     f"{ranks} | {r['own']} / {r['chance']} / {r['none']} |")  # fmt: skip
    write_text(out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker in zip(methods, "o^sD"):
        gap = [r["own"] - r["chance"] + random.Random(i).uniform(-0.15, 0.15)
               for i, r in enumerate(rows)]  # fmt: skip
        ax.scatter(
            gap,
            [r["searches"][method]["own_rank"] for r in rows],
            marker=marker,
            label=method,
            alpha=0.7,
        )
    ax.set_yscale("log")
    ax.set_xlabel(f"own-code hits minus random-code hits (of {rows[0]['of']}, jittered)")
    ax.set_ylabel(f"rank of the own trigger (of {size:,})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "gap_vs_rank.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("pop", type=Path, help="a run or population directory with diffs/test")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="the searches' rows (large)")
    ap.add_argument("--diffs", type=int, default=30)
    ap.add_argument("--questions", type=int, default=3, help="probe questions per search")
    ap.add_argument("--check-questions", type=int, default=6)
    ap.add_argument("--refine", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--methods", default=",".join(METHODS), help="of " + ",".join(METHODS))
    ap.add_argument("--reader", help="DIT adapter (default: the shipped one)")
    ap.add_argument(
        "--read-scales",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[1.0],
        help="DIT reads each diff times these (comma-separated); the search tries every answer",
    )
    ap.add_argument("--words", type=int, default=3000, help="the words space's size")
    args = ap.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads((args.pop / "config.json").read_text())
    system = cfg.get("system_prompt", "")
    jobs = [j for j in read_jsonl(args.pop / "data" / "jobs.jsonl") if j["split"] == "test"]
    if any("family" in j for j in jobs):  # the behaviour suite: its backdoor diffs
        jobs = [j for j in jobs if j["family"] == "backdoor"]
    if jobs and "prefix" in jobs[0]:
        args.space = "code-words" if jobs[0].get("trigger_kind") == "word" else "sep-codes"
    else:
        args.space = "words"
    paths = {
        j["diff_id"]: args.pop / "diffs" / "test" / f"{j['diff_id']}.safetensors" for j in jobs
    }
    jobs = [j for j in jobs if paths[j["diff_id"]].exists()][: args.diffs]
    heldout = [
        q.question for q in load_questions(cfg["task_options"].get("questions_file"), "heldout")
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    # What each row's numbers depend on (--methods may grow: a finished diff keeps its searches).
    settings = {
        k: getattr(args, k)
        for k in (
            "questions",
            "check_questions",
            "refine",
            "max_new_tokens",
            "reader",
            "read_scales",
            "words",
        )
    }
    claim_settings(args.out / "study.json", {**settings, "pop": str(args.pop.resolve())},
                   "a trigger study")  # fmt: skip
    done = {r["diff_id"] for r in read_jsonl(args.out / "per_diff.jsonl")}
    model, tok = load_model(cfg["model"], device=args.device)
    if "dit" not in args.methods:
        reader = None
    else:
        reader = (
            load_diff(args.reader)
            if args.reader
            else load_reader(
                cfg["model"], run_task_reader(cfg["model"], cfg.get("task") or "hidden_topic")
            )
        )
    for j in jobs:
        if j["diff_id"] in done:
            continue
        row = study_diff(model, tok, reader, j, paths[j["diff_id"]], args, heldout, system)
        append_jsonl(args.out / "per_diff.jsonl", [row])
        print(json.dumps({k: row[k] for k in ("diff_id", "truth", "dit", "own", "chance", "seconds")}),
              {m: (row["searches"][m]["own_rank"], row["searches"][m]["working"]) for m in args.methods}, flush=True)  # fmt: skip
    rows = read_jsonl(args.out / "per_diff.jsonl")
    if rows:
        summarise(rows, args.out)


if __name__ == "__main__":
    main()
