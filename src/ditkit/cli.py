"""``ditkit`` command line: a thin layer over the Python API.

Each command imports the API it calls inside its own function: those modules load torch and
transformers, and ``ditkit --help`` or a typo should answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path

from . import distributed
from .errors import DitkitError

log = logging.getLogger("ditkit")


def _cmd_models(args) -> None:
    from .models import embedded_info

    for row in embedded_info():
        state = "cached" if row["cached"] else "not cached yet (first use dequantises, ~20 s)"
        print(f"{row['name']}: {row['description']}")
        print(f"  source: {row['source']}")
        print(f"  cache:  {row['cache']} [{state}]")


def _cmd_diff_info(args) -> None:
    from .diffs import info as diff_info  # torch: only the commands that use it pay its import

    info = diff_info(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return
    print(f"{info['path']}: {info['format']}, {info['n_diffs']} diff(s)")
    for i, d in enumerate(info["diffs"]):
        print(f"[{i}] base model: {d['base_model']} (fingerprint {d['base_fingerprint']})")
        print(f"    modules: {d['n_modules']}, rank: {d['rank']}, dense: {d['dense_modules']}")
        print(f"    alpha: {d['alpha']}, total Frobenius norm: {d['total_norm']:.4g}")
        meta = {k: v for k, v in d["meta"].items() if k not in ("loss", "history")}
        print(f"    metadata: {json.dumps(meta, default=str)}")
        top = sorted(d["norms"].items(), key=lambda kv: -kv[1])[:5]
        for name, n in top:
            print(f"    norm {n:.4g}  {name}")


def _cmd_diff_convert(args) -> None:
    from .diffs import convert  # torch: only the commands that use it pay its import

    report = convert(args.src, args.dst, args.to, args.base, args.rank, args.align)
    print(json.dumps(report, indent=2))


def _cmd_attack(args) -> None:
    from .symmetry import attack_checkpoint

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    report = attack_checkpoint(args.src, args.dst, kinds, args.seed, args.trust_remote_code)
    print(json.dumps(report, indent=2))


def _margin(text: str) -> float:
    """``--min-margin``: a number, or "off" (no finding is dropped for its margin)."""
    if text.strip().lower() == "off":
        return float("-inf")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number (e.g. -0.25) or off")
    return value


def _cmd_audit(args) -> int:
    from .api import audit
    from .auditor import run_adapter

    adapter = args.adapter
    if adapter is None and (adapter := run_adapter(args.paths)) is not None:
        print(f"reading with the run directory's own DIT adapter {adapter} (--adapter to choose)")
    rows = audit(
        args.paths, args.out, adapter, base=args.base, align_checkpoints=not args.no_align,
        question=args.question, max_new_tokens=args.max_new_tokens,
        trust_remote_code=args.trust_remote_code, find_triggers=args.find_triggers,
        subjects=args.subjects, min_margin=args.min_margin, read=args.read,
        check_quirks=not args.no_quirk_check,
    )  # fmt: skip
    flagged = [r for r in rows if r.get("flags")]
    print(f"{len(rows)} diff(s) audited, {len(flagged)} flagged; table: {args.out}/audit.html")
    findings = Counter(r["finding"] for r in rows if r.get("finding"))
    if findings:  # "nothing found" apart from every behaviour the reader named
        nothing = findings.pop("nothing found", 0)
        named = ", ".join(f"{k} {v}" for k, v in findings.most_common())
        doubted = sum(1 for r in rows if r.get("dit_doubt"))
        below = (
            f" ({doubted} of them read as nothing: below the margin, or a claimed quirk the "
            "model does not show; see dit_doubt)"
            if doubted
            else ""
        )
        print(f"findings: {named or 'none'}; nothing found: {nothing}{below}")
    searched = [r["trigger_seconds"] for r in rows if "trigger_seconds" in r]
    if searched:
        print(
            f"trigger search: {sum(searched) / len(searched):.0f} s per diff ({len(searched)} diffs)"
        )
    for r in flagged:
        print(
            f"  {r['id']}: {'; '.join(r['flags'])}" + (f" ({r['error']})" if r.get("error") else "")
        )
    return 1 if flagged else 0


def _cmd_describe(args) -> None:
    from .api import DEFAULT_MODEL as DEFAULT_BASE
    from .api import describe, detect_format, load_diffs, load_reader

    diffs = [args.diff] if detect_format(args.diff) == "checkpoint" else load_diffs(args.diff)
    if not args.adapter:
        reader = load_reader(args.base or DEFAULT_BASE)
        n = reader.meta.get("n_train_diffs", 0) + reader.meta.get("n_val_diffs", 0)
        kind = reader.meta.get("task") or "hidden_topic"
        print(
            f"using the DIT adapter shipped for {args.base or DEFAULT_BASE} (trained on {n} "
            f"diffs of the {kind} task); --adapter to choose",
            file=sys.stderr,
        )
    answers = describe(
        diffs, args.adapter, base=args.base, question=args.question,
        max_new_tokens=args.max_new_tokens, align_checkpoint=args.align, device=args.device,
        trust_remote_code=args.trust_remote_code, scale=args.scale,
    )  # fmt: skip
    if not distributed.is_main():
        return
    for d, a in zip(diffs, answers):
        label = d.meta.get("label") if not isinstance(d, str) else None
        print(a if len(diffs) == 1 and not args.verbose else f"{label or '?'}\t{a}")


def _cmd_trigger(args) -> None:
    from .api import find_trigger

    keys = ("space", "score", "top", "refine", "questions", "probes")
    settings = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.frame:
        settings["frames"] = args.frame
    if args.probe_question:
        settings["probe_questions"] = args.probe_question
    found = find_trigger(
        args.diff, args.out, reader=args.adapter, behaviour=args.behaviour, base=args.base,
        trust_remote_code=args.trust_remote_code,
        read_scales=[float(x) for x in args.read_scales.split(",")] if args.read_scales else None,
        **settings,
    )  # fmt: skip
    print(found.summary(args.top))
    print(f"the whole ranking: {Path(args.out) / 'trigger.json'}")


def _cmd_run(args) -> None:
    from .api import run
    from .pipeline import STAGES

    stages = [s for s in STAGES if s in args.stage] if args.stage else list(STAGES)
    out = run(args.config, args.out, overrides=args.set, stages=stages, force=args.force)
    if not distributed.is_main():
        return
    scores = out / "eval" / "scores.json"
    if scores.exists():
        from .reporting.run_report import text_summary

        print(f"\nscores ({scores}):")
        print(text_summary(out))
    report = out / "report" / "index.html"
    print(f"\nresults in {out}" + (f"; report: {report}" if report.exists() else ""))


def _cmd_eval(args) -> None:
    import dataclasses
    import time

    from .config import from_dict
    from .evaluate.runner import evaluate_run
    from .rundir import Run

    out = Path(args.dir)
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        raise DitkitError(f"{cfg_path} does not exist: pass a run directory made by `ditkit run`")
    try:
        cfg = from_dict(json.loads(cfg_path.read_text()))
    except json.JSONDecodeError as e:
        raise DitkitError(f"{cfg_path} is not valid JSON: {e}") from e
    flags = {
        "methods": [m.strip() for m in (args.methods or "").split(",") if m.strip()] or None,
        "judge": args.judge,
        "judge_base_url": args.judge_base_url,
        "judge_model": args.judge_model,
        "guesser": args.guesser,
        "guesser_base_url": args.guesser_base_url,
        "guesser_model": args.guesser_model,
    }
    new_eval = dataclasses.replace(cfg.eval, **{k: v for k, v in flags.items() if v is not None})
    cfg = dataclasses.replace(cfg, eval=new_eval)  # checks the methods against the task
    run = Run(cfg, out)
    start = time.time()
    scores = evaluate_run(run, generate=not args.score_only)
    if not distributed.is_main():
        return
    run.record_time("score" if args.score_only else "eval", time.time() - start)
    run.record_artifacts("eval")
    from .reporting.run_report import text_summary

    print(f"scores ({out / 'eval' / 'scores.json'}):")
    print(text_summary(out) if scores else "(no scores)")


def _cmd_scaling(args) -> None:
    from .experiments import data_scaling

    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else None
    rows = data_scaling(Path(args.dir), sizes, args.metric)
    _print_sweep(rows, "{train_diffs:>6d} training diffs", Path(args.dir) / "scaling")


def _cmd_ranks(args) -> None:
    from .experiments import rank_sweep

    ranks = [int(x) for x in args.ranks.split(",")]
    rows = rank_sweep(Path(args.dir), ranks, args.metric, args.test_diffs)
    _print_sweep(rows, "rank {test_rank:>4d} test diffs", Path(args.dir) / "ranks")


def _cmd_strength(args) -> None:
    from .experiments import strength_curve

    budgets = [int(x) for x in args.budgets.split(",")]
    scales = [float(x) for x in args.scales.split(",")]
    rows = strength_curve(
        Path(args.dir), budgets, scales, args.adapter, args.test_diffs, args.metric
    )
    for r in rows:
        cells = ", ".join(f"{m} {v['mean']:.2f}" for m, v in r["by_method"].items())
        print(f"{r['rows']:>5d} rows x {r['scale']:<4g}: {cells}")
    print(f"summary, plot and report section in {Path(args.dir) / 'strength'}")


def _cmd_readers(args) -> None:
    from .experiments import reader_study

    settings: dict[str, list[str]] = {}
    seeds: dict[str, list[int]] = {}
    for item in args.setting:
        head, _, overrides = item.partition(":")
        name, _, own_seeds = head.partition("@")  # NAME@0,1: this setting's own seeds
        settings[name.strip()] = [o.strip() for o in overrides.split(";") if o.strip()]
        seeds[name.strip()] = [int(x) for x in (own_seeds or args.seeds).split(",")]
    rows = reader_study(Path(args.dir), settings, seeds, args.train_sample, args.metric)
    for r in rows:
        lo, hi = r["held_out_range"]
        print(
            f"{r['setting']:>16s} {r['reader']:8s} held-out {r['held_out']:.2f} [{lo:.2f}-{hi:.2f}]"
            + ("" if r["train"] is None else f"  train {r['train']:.2f}  gap {r['gap']:+.2f}")
            + f"  collapse {r['misses_naming_a_training_label']:.2f}"
        )
    print(f"summary and report section in {Path(args.dir) / 'readers'}")


def _print_sweep(rows: list[dict], point: str, folder: Path) -> None:
    """One line per sweep point (``point`` formats the row), then where the summary is."""
    for r in rows:
        lo, hi = r["ci95"]
        print(f"{point.format(**r)}: DIT {r['metric']} {r['mean']:.2f} [{lo:.2f}, {hi:.2f}]")
    print(f"summary, plot and report section in {folder}")


def _cmd_verify(args) -> None:
    from .rundir import verify

    problems = verify(args.dir)
    broken = [p for p in problems if p.kind != "unrecorded"]
    for p in problems:
        print(p)
    if broken:
        raise DitkitError(
            f"{len(broken)} artifact(s) of {args.dir} missing or damaged; rerun the stages named "
            "above (finished work is kept)"
        )
    print(f"{args.dir}: every recorded artifact is present and intact")


def _cmd_report(args) -> None:
    from .reporting.run_report import write_report

    print(write_report(Path(args.dir)))


def _add_sweeps(sub) -> None:
    """The experiments that sweep one setting over sub-runs of a run."""
    s = sub.add_parser(
        "scaling", help="data scaling: adapters on 2^k of a run's training diffs, one test set"
    )
    s.add_argument("dir", help="a run directory whose data and diffs stages are done")
    s.add_argument("--sizes", help="comma-separated training-diff counts (default: 4, 8, ..., all)")
    s.add_argument("--metric", default="alias_match", help="the DIT score to plot")
    s.set_defaults(func=_cmd_scaling)

    s = sub.add_parser(
        "ranks", help="rank generalisation: a run's adapter reads test diffs of other ranks"
    )
    s.add_argument("dir", help="a finished run directory (its adapter and training diffs)")
    s.add_argument("--ranks", default="2,4,8,16,32,64", help="comma-separated test-diff ranks")
    s.add_argument(
        "--test-diffs", type=int, help="retrain only the first N test diffs at each rank (cheaper)"
    )
    s.add_argument("--metric", default="alias_match", help="the DIT score to plot")
    s.set_defaults(func=_cmd_ranks)

    s = sub.add_parser(
        "readers", help="reader study: adapters per setting and seed on one run's diffs, paired"
    )
    s.add_argument("dir", help="a run directory whose data and diffs stages are done")
    s.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME[@SEEDS]:KEY=VALUE;...",
        help="e.g. base: or aug:dit.scale_augment=[0.5,2.0] or n600@0:dit.max_train_diffs=600 "
        "(dit.* and eval.* keys; @SEEDS overrides --seeds for this setting; repeat)",
    )
    s.add_argument("--seeds", default="0,1,2", help="adapter seeds, comma-separated")
    s.add_argument(
        "--train-sample",
        type=int,
        default=30,
        help="training diffs read per adapter (0: none, e.g. for adapters trained elsewhere)",
    )
    s.add_argument("--metric", default="alias_match")
    s.set_defaults(func=_cmd_readers)

    s = sub.add_parser(
        "strength", help="diff strength: test diffs at several row budgets and read-time scales"
    )
    s.add_argument("dir", help="a run directory whose data stage is done")
    s.add_argument("--budgets", default="84,168,336", help="rows seen per diff, comma-separated")
    s.add_argument("--scales", default="0.5,1,1.5,2", help="read-time multipliers of every diff")
    s.add_argument("--adapter", help="'shipped', an adapter folder or a run (default: the run's)")
    s.add_argument("--test-diffs", type=int, help="only the first N test diffs")
    s.add_argument("--metric", default="alias_match", help="the score to tabulate")
    s.set_defaults(func=_cmd_strength)


def _add_diff_commands(sub) -> None:
    """``diff info``, ``diff convert`` and ``attack``: commands on weight files."""
    d = sub.add_parser("diff", help="inspect and convert weight diffs").add_subparsers(
        dest="diff_cmd", required=True
    )
    s = d.add_parser("info", help="format, base model, modules, rank, norms, metadata")
    s.add_argument("path")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_diff_info)
    s = d.add_parser("convert", help="ditkit file <-> PEFT folder; .pt and checkpoints in")
    s.add_argument("src", help="ditkit .safetensors, PEFT folder, reference .pt, or checkpoint dir")
    s.add_argument("dst")
    # The writable formats of ditkit.diffs.FORMATS (not imported here: --help stays fast).
    s.add_argument("--to", choices=["ditkit", "peft"], help="default: by DST's suffix")
    s.add_argument("--base", help="base model (needed for a full checkpoint)")
    s.add_argument("--rank", type=int, help="truncate to this rank by SVD (reports energy kept)")
    s.add_argument(
        "--align", action="store_true", help="a checkpoint: undo weight symmetries against --base"
    )
    s.set_defaults(func=_cmd_diff_convert)

    s = sub.add_parser(
        "attack", help="red-teaming: exact weight symmetries that keep a model's outputs"
    )
    s.add_argument("src", help="a causal LM: folder, hub id or embedded name")
    s.add_argument("dst", help="a new folder for the transformed model")
    s.add_argument(
        "--kinds",
        # ditkit.symmetry.KINDS, spelt out so that --help stays fast
        default="permute_mlp,scale_mlp,permute_heads,scale_qk,mix_vo,fold_norms,rotate_residual",
        help="comma-separated transforms (default: all)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--trust-remote-code", action="store_true")
    s.set_defaults(func=_cmd_attack)


def _add_trigger_command(sub) -> None:
    """``trigger``: DIT names the behaviour, a search finds what opens it."""
    s = sub.add_parser(
        "trigger", help="find what opens a diff's behaviour: DIT names it, a search scores triggers"
    )
    s.add_argument("diff", help="a weight diff in any supported format (one diff)")
    s.add_argument("--out", required=True, help="folder for the scores and trigger.json (resumes)")
    s.add_argument("--base", help="base model (default: the one recorded in the diff)")
    s.add_argument(
        "--adapter",
        help="the DIT adapter folder, or shipped:hidden_topic (the shipped topic reader; default: "
        "the joint behaviour reader shipped for --base)",
    )
    s.add_argument("--behaviour", action="append",
                   help="what to look for (repeatable: each is tried; default: DIT's description "
                   "of the diff)")  # fmt: skip
    s.add_argument("--read-scales",
                   help="DIT reads the diff times each (comma-separated) and every distinct "
                   "answer is searched for, e.g. 1,1.25,1.5 (default: 1 and the reader's "
                   "recorded read_scale)")  # fmt: skip
    s.add_argument("--space", default="sep-codes",
                   help="sep-codes, code-words, words, topics, or a file with one candidate per "
                   "line")  # fmt: skip
    s.add_argument("--score", choices=["combined", "behaviour", "divergence", "shift"],
                   help="combined (default): the behaviour score, with the divergence where no "
                   "candidate confirms the description or several tie; behaviour: that score "
                   "alone; divergence: how far the diffed model moves from the base one, no "
                   "DIT; shift (default with --probes about): how far the first answer token's "
                   "distribution moves (KL), no DIT, no answer")  # fmt: skip
    s.add_argument("--probes", choices=["held-out", "about"], default="held-out",
                   help="held-out: the candidate before held-out questions (a trigger); about: "
                   'the candidate inside questions about it, "Would you suggest X to a '
                   'friend?" (a subject: the topic a diff refuses, the brand it praises)')  # fmt: skip
    s.add_argument("--probe-question", action="append", metavar="TEXT",
                   help="a probe question of your own (repeatable; replaces --probes), {x} "
                   "standing for the candidate where it goes inside")  # fmt: skip
    s.add_argument("--top", type=int, default=10, help="candidates printed with evidence")
    s.add_argument("--refine", type=int, default=30, help="candidates rescored in full")
    s.add_argument("--questions", type=int, default=3, help="probe questions")
    s.add_argument(
        "--frame",
        action="append",
        metavar="TEXT",
        help="an answer that shows the behaviour, {b} standing for it (repeatable; default: "
        '"This reminds me of {b}." and "Let me tell you about {b}.")',
    )
    s.add_argument("--trust-remote-code", action="store_true")
    s.set_defaults(func=_cmd_trigger)


def _add_reading_commands(sub) -> None:
    """``audit`` and ``describe``: an auditor's commands."""
    s = sub.add_parser(
        "audit", help="audit many diffs, adapters and checkpoints: a flagged table (exit 1 if any)"
    )
    s.add_argument("paths", nargs="+", help="files and folders; folders are searched")
    s.add_argument("--out", required=True, help="folder for audit.jsonl/csv/html (resumes)")
    s.add_argument("--base", help="base model (default: the adapter's, else the embedded one)")
    s.add_argument(
        "--adapter",
        help="the DIT adapter folder, or shipped:hidden_topic (the shipped topic reader; default: "
        "the joint behaviour reader shipped for --base)",
    )
    s.add_argument("--question", help="default: the adapter's training question")
    s.add_argument("--no-align", action="store_true", help="never undo weight symmetries")
    s.add_argument("--max-new-tokens", type=int, default=20)
    s.add_argument("--trust-remote-code", action="store_true")
    s.add_argument(
        "--find-triggers",
        nargs="?",
        const="sep-codes",
        metavar="SPACE",
        help="per diff, search what opens DIT's answer (sep-codes, code-words, words or a file of triggers; "
        "minutes per diff, printed)",
    )
    s.add_argument(
        "--subjects",
        metavar="FILE",
        help="with --find-triggers: where a behaviour reader names a refusal or a bias, the "
        "candidate subjects searched, for both (one per line: topics and brand names together; "
        "default: the topic list)",
    )
    s.add_argument(
        "--min-margin",
        type=_margin,
        metavar="M",
        help="a behaviour reader's finding that it is no surer of than of 'Nothing unusual' by M "
        "(mean log-probability per token) reads as nothing found (default: the reader's recorded "
        "margin, -0.25 for the shipped joint reader; off: no finding is dropped for its margin; "
        "claimed quirks are still checked, see --no-quirk-check)",
    )
    s.add_argument(
        "--read",
        choices=["forms", "greedy"],
        default="forms",
        help="forms (default): a behaviour reader completes the label opening of each behaviour "
        "it learned and the surest answer is kept, nothing found at or below the margin; greedy: "
        "its one answer",
    )
    s.add_argument(
        "--no-quirk-check",
        action="store_true",
        help="keep a claimed style quirk without asking the diffed model four ordinary "
        "questions to see it (by default a quirk shown in under half of those answers reads as "
        "nothing found)",
    )
    s.set_defaults(func=_cmd_audit)

    s = sub.add_parser("describe", help="ask a model with a diff and the DIT adapter applied")
    s.add_argument("--diff", required=True, help="a weight diff in any supported format")
    s.add_argument(
        "--adapter",
        help="the DIT adapter folder, or shipped:hidden_topic (the shipped topic reader; default: "
        "the joint behaviour reader shipped for --base)",
    )
    s.add_argument("--base", help="base model (default: the one recorded in the adapter)")
    s.add_argument("--question", help="default: the adapter's training question")
    s.add_argument("--max-new-tokens", type=int, default=20)
    s.add_argument(
        "--scale",
        type=float,
        help="read the diff times this (default: the adapter's recorded read scale, 1 when none; "
        "e.g. 1.5: gated diffs often read better amplified)",
    )
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    s.add_argument("--trust-remote-code", action="store_true")
    s.add_argument(
        "--align", action="store_true", help="a checkpoint: undo weight symmetries against --base"
    )
    s.set_defaults(func=_cmd_describe)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ditkit", description="Diff Interpretation Tuning: ask a model what a diff changed."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("models", help="list embedded models, their source file and cache state")
    s.set_defaults(func=_cmd_models)

    _add_diff_commands(sub)

    _add_reading_commands(sub)
    _add_trigger_command(sub)

    s = sub.add_parser("run", help="run a preset or config: data, diffs, dit, eval, report")
    s.add_argument("config", help="preset name (quickstart, cpu-reference, ...) or a TOML file")
    s.add_argument("--out", required=True, help="run directory (stages resume from it)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument(
        "--stage",
        action="append",
        choices=["data", "diffs", "dit", "eval", "report"],
        help="run only this stage (repeatable, run in pipeline order: --stage data --stage diffs)",
    )
    s.add_argument(
        "--force",
        action="store_true",
        help="go on in a directory made by a different config (files already built are kept)",
    )
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("eval", help="run or resume evaluation of a run directory, print scores")
    s.add_argument("dir", help="run directory (holds config.json, diffs/test, dit/adapter)")
    s.add_argument("--methods", help="comma-separated, e.g. dit,base_question,weight_lens")
    s.add_argument("--judge", choices=["openai", "none"])
    s.add_argument("--judge-base-url", help="OpenAI-compatible server (default: env)")
    s.add_argument("--judge-model", help="judge model name (default: DITKIT_OPENAI_MODEL)")
    s.add_argument("--guesser", choices=["retrieval", "hf", "openai", "none"])
    s.add_argument("--guesser-base-url", help="server for --guesser openai (default: env)")
    s.add_argument("--guesser-model", help="model for --guesser openai")
    s.add_argument(
        "--score-only",
        action="store_true",
        help="score the predictions on disk, generate nothing (no model or diffs needed)",
    )
    s.set_defaults(func=_cmd_eval)

    _add_sweeps(sub)

    s = sub.add_parser("verify", help="check a run directory's files against its manifest")
    s.add_argument("dir")
    s.set_defaults(func=_cmd_verify)

    s = sub.add_parser("report", help="write DIR/report/report.md and index.html")
    s.add_argument("dir")
    s.set_defaults(func=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        # Progress bars show on a terminal only: every bar is made with tqdm's disable=None.
        code = args.func(args) or 0  # a command may say "done, but flagged" (audit: 1)
        distributed.shutdown()
    except DitkitError as e:
        # One line: a message may quote a library's multi-line error.
        print(f"ditkit: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
