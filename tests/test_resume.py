"""Kill a real `ditkit run` anywhere with SIGKILL, rerun it, and get an uninterrupted run's bits.

Each kill point is a named place in the code (`ditkit.files.kill_point`); the environment variable
``DITKIT_KILL_AT=NAME@N`` makes the process SIGKILL itself the N-th time it gets there. One run
directory is killed at every point in turn (each rerun resumes from what the last one left), then
finished, and compared with a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ditkit.diffs import load_diff
from ditkit.files import read_jsonl
from ditkit.rundir import verify
from fake_openai import LOCAL_NO_PROXY, OPENAI_ENV_VARS, PROXY_VARS, FakeOpenAI
from test_pipeline import tiny_overrides

# In run order: inside the first diff pass, between two diff files of a pass, between passes,
# mid-epoch in DIT training (epoch 2, after epoch 1's checkpoint), during evaluation, and while
# the judge grades.
KILL_POINTS = (
    "diffs.step@5",
    "diffs.saved@2",
    "diffs.pass@2",
    "dit.step@3",
    "eval.append@2",
    "eval.score@3",
)


def _run(model_dir: Path, out: Path, server_url: str, kill_at: str | None = None):
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS + OPENAI_ENV_VARS}
    env.update(
        NO_PROXY=LOCAL_NO_PROXY,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        DITKIT_OPENAI_BASE_URL=server_url,
        DITKIT_OPENAI_MODEL="fake-judge",
    )
    if kill_at:
        env["DITKIT_KILL_AT"] = kill_at
    sets = tiny_overrides(
        model_dir,
        **{
            "eval.guesser": '"hf"',
            "eval.judge": '"openai"',
            "task_options.twenty_q_count": 3,
            "task_options.twenty_q_max_new_tokens": 4,
            "threads": 1,
        },
    )
    cmd = [sys.executable, "-m", "ditkit", "run", "quickstart", "--out", str(out)]
    cmd += [a for s in sets for a in ("--set", s)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _tensors_and_meta(path: Path) -> tuple[dict, dict]:
    d = load_diff(path)
    meta = {k: v for k, v in d.meta.items() if k != "train_seconds_per_diff"}
    return {n: (a, b) for n, (a, b) in d.lowrank.items()}, meta


@pytest.mark.slow
def test_killed_anywhere_the_rerun_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    with FakeOpenAI(default="Close.\nSCORE: 3") as server:
        ref = tmp_path / "uninterrupted"
        done = _run(tiny_model_dir, ref, server.url)
        assert done.returncode == 0, done.stderr[-3000:]
        ref_requests = server.count

        run = tmp_path / "killed"
        for point in KILL_POINTS:
            killed = _run(tiny_model_dir, run, server.url, kill_at=point)
            assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-3000:])
        before = server.count
        final = _run(tiny_model_dir, run, server.url)
        assert final.returncode == 0, final.stderr[-3000:]
        # The judge saw each question once: replies it gave before a kill came from the cache.
        bodies = [json.dumps(r, sort_keys=True) for r in server.requests[ref_requests:]]
        assert len(bodies) == len(set(bodies)) == ref_requests, (before, server.count)

    # Every artifact exactly once, nothing half-written, the manifest intact.
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".*.old"))
    assert verify(run) == []
    for split in ("train", "test"):
        names = sorted(p.name for p in (run / "diffs" / split).iterdir())
        assert names == sorted(p.name for p in (ref / "diffs" / split).iterdir())
        for name in names:
            got, want = (_tensors_and_meta(d / "diffs" / split / name) for d in (run, ref))
            assert got[1] == want[1], name
            for module, (a, b) in want[0].items():  # bit for bit, fp32 on CPU
                assert a.equal(got[0][module][0]) and b.equal(got[0][module][1]), (name, module)
    got, want = (load_file(d / "dit" / "adapter" / "adapter_model.safetensors") for d in (run, ref))
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
    rows = [read_jsonl(d / "eval" / "predictions.jsonl") for d in (run, ref)]
    assert len(rows[0]) == len(rows[1])
    assert rows[0] == rows[1]
    scores = [json.loads((d / "eval" / "scores.json").read_text()) for d in (run, ref)]
    assert scores[0] == scores[1]
