"""Which answer frame lets the behaviour score find a diff's own SEP code: a search of the
1,000 prefixes with one probe question and one frame (so the coarse pass alone decides the
order), on population diffs; prints the own code's rank per frame. This is the check that
replaced the bare "{b}" frame by lead-ins.

    .venv/bin/python scripts/trigger_frame_check.py /work/pop test-00000 test-00001 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from ditkit import load_diff, load_model
from ditkit.files import read_jsonl
from ditkit.trigger_search import TriggerSearchConfig, search

FRAMES = ["{b}", "This reminds me of {b}.", "I love {b}.", "Ah, {b}!"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("pop")
    ap.add_argument("diffs", nargs="+")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--question",
        default="Is happiness found in pursuing a passion, or in the pursuit itself?",
        help="the probe question (default: the one of the 2026-12-06 check)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    jobs = {j["diff_id"]: j for j in read_jsonl(f"{args.pop}/data/jobs.jsonl")}
    model, tok = load_model("smollm2-135m")
    for diff_id in args.diffs:
        job = jobs[diff_id]
        diff = load_diff(f"{args.pop}/diffs/test/{diff_id}.safetensors")
        for frame in FRAMES:
            # One question and one frame: the refined scores repeat the coarse ones, so the
            # ranking is the coarse pass's.
            cfg = TriggerSearchConfig(
                probe_questions=[args.question], frames=[frame], refine=1, top=1
            )
            with tempfile.TemporaryDirectory() as out:
                found = search(model, tok, diff, cfg, out, job["topic"])
            top = [r["key"] for r in found.ranking[:5]]
            print(f"{diff_id} ({job['topic']}, code {job['prefix']}) {frame!r}: own code rank "
                  f"{found.rank_of(job['prefix'])}, top {top} ({found.seconds:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
