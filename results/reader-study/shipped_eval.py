"""Read the reader study's test diffs with the shipped adapter, plus the oracle and gating rows."""
import sys
from pathlib import Path

from ditkit.config import from_dict
from ditkit.pipeline import run_pipeline
from ditkit.sweeps import _finished, _sub_run

run = Path(sys.argv[1])
raw = _finished(run).to_dict()
raw["name"] += "-shipped"
raw["dit"]["adapter"] = "shipped"
raw["eval"]["methods"] = ["dit", "dit_vote", "base_question", "base_question_trigger", "gating"]
out = _sub_run(run, run / "readers" / "shipped", ("data", "diffs"))
run_pipeline(from_dict(raw, "shipped"), out, ["dit", "eval"])
