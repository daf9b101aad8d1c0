"""Which answer frame lets the behaviour score find a diff's own SEP code: every one of the
1,000 prefixes scored once (the coarse pass) for each frame, on population diffs; prints the own
code's rank per frame. This is the check that replaced the bare "{b}" frame by lead-ins.

    .venv/bin/python scripts/trigger_frame_check.py /work/pop test-00000 test-00001 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from ditkit import load_diff, load_model, lora
from ditkit.batching import chat_prompt
from ditkit.diffs import install_diffs
from ditkit.files import read_jsonl
from ditkit.trigger_search import _logprobs, _span_ids, candidates, trigger_text

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
    lora.inject(model)
    question = args.question
    keys = candidates("sep-codes")
    for diff_id in args.diffs:
        job = jobs[diff_id]
        diff = load_diff(f"{args.pop}/diffs/test/{diff_id}.safetensors")
        install_diffs(model, [diff], torch.zeros(1, dtype=torch.long))
        prompts = [
            tok(chat_prompt(tok, trigger_text("sep-codes", k, question), ""),
                add_special_tokens=False)["input_ids"]
            for k in keys
        ]  # fmt: skip
        for frame in FRAMES:
            start = frame.index("{b}")
            ids, mask = _span_ids(tok, frame.replace("{b}", job["topic"]), start,
                                  start + len(job["topic"]))  # fmt: skip
            t = time.time()
            lp = torch.cat([_logprobs(model, tok, prompts[i : i + 64], ids, True)
                            for i in range(0, len(keys), 64)])  # fmt: skip
            order = lp[:, torch.tensor(mask)].sum(-1).argsort(descending=True).tolist()
            rank = order.index(keys.index(job["prefix"])) + 1
            print(f"{diff_id} ({job['topic']}, code {job['prefix']}) {frame!r}: own code rank "
                  f"{rank}, top {[keys[i] for i in order[:5]]} ({time.time() - t:.0f} s)", flush=True)  # fmt: skip
        lora.clear_diffs(model)


if __name__ == "__main__":
    main()
