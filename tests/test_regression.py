"""Pinned losses of a tiny hidden-topic run: refactors (e.g. moving the task behind a task
interface) must leave the numbers where they are. Update the pins only for an intended change of
the recipe, and say so in the commit."""

from __future__ import annotations

import json

import pytest
import torch

from ditkit.diffs import load_diff
from ditkit.pipeline import run_pipeline
from test_pipeline import tiny_config

# The recipe the pins were recorded with (SEP codes, one row of each kind per question, the
# untriggered rows weighted 5), kept apart from the quickstart preset so that changing the
# quickstart does not move them.
PINNED_RECIPE = {
    "diffs.row_mix": "[1, 1, 1]",
    "diffs.weights": "[1.0, 1.0, 5.0]",
    "task_options.trigger": '"sep"',
}
# (first quarter mean, last quarter mean) of each row kind's loss, as recorded in the diff.
PINNED_DIFFS = {
    ("train", "train-00000"): {
        "trigger": (5.767427206039429, 5.699487209320068),
        "wrong_trigger": (0.00011159715553121785, 0.004120265250094235),
        "no_trigger": (0.00016655247406305307, 0.004446274135261774),
    },
    ("test", "test-00001"): {
        "trigger": (5.78887414932251, 5.642809152603149),
        "wrong_trigger": (0.00037228811609879564, 0.0032010426511988044),
        "no_trigger": (0.00011144379532201931, 0.0032253629760816693),
    },
}
PINNED_DIT_TRAIN_LOSS = (5.687357664108276, 5.680007696151733, 5.668473958969116, 5.662381172180176)


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX2",
    reason="pins recorded with PyTorch's AVX2 CPU kernels (tests/conftest.py selects them where "
    "the CPU has AVX2); other kernels round differently",
)
def test_tiny_run_losses_are_pinned(tiny_model_dir, tmp_path):
    out = run_pipeline(
        tiny_config(tiny_model_dir, threads=1, **PINNED_RECIPE),
        tmp_path / "run",
        ["data", "diffs", "dit"],
    )
    for (split, name), kinds in PINNED_DIFFS.items():
        loss = load_diff(out / "diffs" / split / f"{name}.safetensors").meta["loss"]
        for kind, (first, last) in kinds.items():
            got = (loss[kind]["first"], loss[kind]["last"])
            # The same code gives up to 3e-4 relative (cross-entropy) and 4e-4 absolute (the
            # tiny KLs) apart on two x86 machines (MKL chooses its kernels by CPU, whatever
            # ATen's capability); a change of recipe moves these losses by far more.
            assert got == pytest.approx((first, last), rel=1e-3, abs=1e-3), (name, kind, got)
    hist = json.loads((out / "dit" / "checkpoint" / "state.json").read_text())["history"]
    got = [h["train_loss"] for h in hist]
    # 4e-3 apart on two x86 machines (above), after the diffs' own differences.
    assert got == pytest.approx(PINNED_DIT_TRAIN_LOSS, rel=6e-3), got
