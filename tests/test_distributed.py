"""Several processes through torchrun (gloo, CPU) give the files one process gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ditkit import distributed
from ditkit.config import load_config
from ditkit.diffs import load_diff
from ditkit.files import read_jsonl
from ditkit.pipeline import run_pipeline
from ditkit.rundir import verify
from test_lora import reference_pairs
from test_pipeline import tiny_overrides

SETS = {"eval.guesser": '"hf"', "task_options.twenty_q_count": 3, "threads": 1, "data.n_train": 8}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shares_are_disjoint_and_cover_every_pass_even_after_a_restart(n):
    passes = list(range(11))
    shares = [distributed.share(passes, r, n) for r in range(n)]
    assert sorted(p for s in shares for p in s) == passes
    # A restarted launch lists what is still pending and shares that: again each pass once.
    pending = [p for p in passes if p % 3]
    shares = [distributed.share(pending, r, n) for r in range(n)]
    assert sorted(p for s in shares for p in s) == pending


def _fake_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    monkeypatch.setattr(distributed, "barrier", lambda: None)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_only_the_main_process_writes_shared_files(tiny_model_dir, tmp_path, monkeypatch):
    cfg = load_config("quickstart", tiny_overrides(tiny_model_dir, **SETS))
    out = run_pipeline(cfg, tmp_path / "run", ["data", "diffs", "dit"])
    before = _snapshot(out)
    _fake_rank(monkeypatch, 1, 2)
    run_pipeline(cfg, out, ["data", "diffs", "eval", "report"])
    after = _snapshot(out)
    added = sorted(set(after) - set(before))
    # Rank 1 of 2 wrote its share of the predictions to its own part file; nothing shared.
    assert added == ["eval/predictions.part-1.jsonl"], added
    assert all(after[k] == v for k, v in before.items())


RUN = {"capture_output": True, "text": True, "timeout": 900}


def _torchrun(model_dir: Path, out: Path, nproc: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", "-m", "ditkit", "run", "quickstart", "--out", str(out)]
    cmd += [a for s in tiny_overrides(model_dir, **SETS) for a in ("--set", s)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_processes_equal_one(tiny_model_dir, tmp_path):
    one = run_pipeline(
        load_config("quickstart", tiny_overrides(tiny_model_dir, **SETS)), tmp_path / "one"
    )
    two = tmp_path / "two"
    done = _torchrun(tiny_model_dir, two, 2)
    assert done.returncode == 0, done.stderr[-4000:]
    assert verify(two) == []
    assert not list((two / "eval").glob("predictions.part-*"))
    for split in ("train", "test"):
        names = sorted(p.name for p in (one / "diffs" / split).iterdir())
        assert names == sorted(p.name for p in (two / "diffs" / split).iterdir())
        for name in names:  # each pass trained whole by one process: the same bits
            a, b = (load_diff(d / "diffs" / split / name) for d in (one, two))
            for module, (a_ri, b_or) in a.lowrank.items():
                assert a_ri.equal(b.lowrank[module][0]) and b_or.equal(b.lowrank[module][1])
    # DIT: each global batch's gradients summed over two processes: equal up to summation order
    # (Adam magnifies it for the odd near-zero gradient: 1 element of 1,024 moved by 9e-6 here).
    got, want = (load_file(d / "dit" / "adapter" / "adapter_model.safetensors") for d in (two, one))
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-4)
    rows = {d: read_jsonl(d / "eval" / "predictions.jsonl") for d in (one, two)}
    key = lambda r: (r["diff_id"], r["method"], r["question"])  # noqa: E731
    assert sorted(map(key, rows[one])) == sorted(map(key, rows[two]))
    # Methods that do not read the adapter: every answer the same, whichever process made it.
    plain = {key(r): r["answer"] for r in rows[one] if r["method"] != "dit"}
    assert plain == {key(r): r["answer"] for r in rows[two] if r["method"] != "dit"}

    # describe: a file of several diffs, answered by two processes, printed once by the main one.
    pt = tmp_path / "several.pt"
    paths = sorted((one / "diffs" / "train").glob("*.safetensors"))[:5]
    entries = []
    for path in paths:
        d = load_diff(path)
        entries.append({"topic": d.meta["label"], "weight_diff": reference_pairs(d)})
    torch.save(entries, pt)
    ask = ["describe", "--diff", str(pt), "--adapter", str(one / "dit" / "adapter")]
    ask += ["--max-new-tokens", "3", "--base", str(tiny_model_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    single = subprocess.run([sys.executable, "-m", "ditkit", "-v", *ask], env=env, **RUN)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = subprocess.run([*launch, "-m", "ditkit", "-v", *ask], env=env, **RUN)
    assert single.returncode == double.returncode == 0, double.stderr[-3000:]
    assert len(single.stdout.splitlines()) == 5
    assert double.stdout == single.stdout
