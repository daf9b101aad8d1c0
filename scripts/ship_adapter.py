"""Copy a finished run's DIT adapter into the package as the shipped adapter (bf16 + manifest).

    .venv/bin/python scripts/ship_adapter.py runs/rows-84 \
        --dest src/ditkit/data/adapters/smollm2-135m-hidden-topic

The manifest (``ditkit.json``) records the adapter's sha256, the base model and its file's sha256,
the question, the prompt format, the diff recipe and the training topics; see ``ditkit.shipped``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ditkit.shipped import SHIPPED, adapters_root, ship_adapter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path, help="run directory with dit/adapter and data/jobs.jsonl")
    ap.add_argument("--base", default="smollm2-135m", help="embedded base model name")
    ap.add_argument("--dest", type=Path, help="default: the package's folder for --base")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    dest = args.dest or adapters_root() / SHIPPED[args.base]
    out = ship_adapter(args.run, dest, args.base)
    size = (out / "adapter_model.safetensors").stat().st_size
    print(f"{out}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
