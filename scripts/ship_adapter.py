"""Copy a finished run's DIT adapter into the package as a shipped adapter (bf16 + manifest),
into the package's folder for the run's task and the base model (``ditkit.shipped.SHIPPED``).

    .venv/bin/python scripts/ship_adapter.py runs/rows-84          # the hidden-topic reader
    .venv/bin/python scripts/ship_adapter.py RUN/readers/pref0.5-s28   # the joint behaviour one

The manifest (``ditkit.json``) records the adapter's sha256, the base model and its file's sha256,
the question, the prompt format, the diff recipe and the training labels; see ``ditkit.shipped``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ditkit.shipped import SHIPPED, adapters_root, ship_adapter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path, help="run directory with dit/adapter and data/jobs.jsonl")
    ap.add_argument("--base", default="smollm2-135m", help="embedded base model name")
    ap.add_argument("--dest", type=Path, help="default: the package's folder for --base")
    ap.add_argument("--read-scale", type=float, default=1.0,
                    help="the multiplier describe and audit read diffs at with this adapter")  # fmt: skip
    ap.add_argument("--nothing-margin", type=float,
                    help="a behaviour reader: audit reads a finding it is no surer of than of "
                    "'Nothing unusual' by this margin as nothing found")  # fmt: skip
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    task = json.loads((args.run / "config.json").read_text()).get("task") or "hidden_topic"
    dest = args.dest or adapters_root() / SHIPPED[args.base][task]
    out = ship_adapter(args.run, dest, args.base, args.read_scale, args.nothing_margin)
    size = (out / "adapter_model.safetensors").stat().st_size
    print(f"{out}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
