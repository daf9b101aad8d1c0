"""The behaviour suite's joint readers against the shipped hidden-topic reader, paired on the
population's first 50 held-out topic diffs (issue 28's bar for shipping the joint reader: keep
>= 90% of the topic reader's score). Reads the reader folders of /work/runs/pop/readers.

    .venv/bin/python results/behaviours/shipped-joint/compare.py > results/behaviours/shipped-joint/table.md
"""

from __future__ import annotations

import json
from pathlib import Path

from ditkit.evaluate.stats import paired_difference
from ditkit.files import read_jsonl

READERS = Path("/work/runs/pop/readers")
HELD = [f"test-{i:05d}" for i in range(50)]
TOPIC = "shipped-s0"  # the shipped hidden-topic reader, asked its own question
ROWS = [
    ("joint (cross-entropy), its own question", "jointq-s0"),
    ("joint + preference stage (shipped), its own question", "jointprefq-s0"),
    ("joint (cross-entropy), the topic question", "joint-s0"),
    ("joint + preference stage (shipped), the topic question", "jointpref-s0"),
]


def scores(folder: str, method: str) -> list[float]:
    found = {}
    for r in read_jsonl(READERS / folder / "eval" / "predictions.jsonl"):
        if r["method"] == method and r.get("scores"):
            found.setdefault(r["diff_id"], float(r["scores"]["alias_match"]))
    return [found[d] for d in HELD]


def main() -> None:
    print("The population's first 50 held-out hidden-topic diffs (code words): alias match of "
          "each reader, and minus the shipped hidden-topic reader, paired per diff (95% "
          "interval; wins / losses); `dit_vote`: the majority of reads at 1, 1.25 and 1.5 times "
          "the diff.\n")  # fmt: skip
    print(
        "| reader | dit | minus topic reader | share kept | dit_vote | minus topic reader | share kept |"
    )
    print("|---|---|---|---|---|---|---|")
    ref = {m: scores(TOPIC, m) for m in ("dit", "dit_vote")}
    print(f"| shipped hidden-topic reader | {sum(ref['dit']) / 50:.2f} | | | "
          f"{sum(ref['dit_vote']) / 50:.2f} | | |")  # fmt: skip
    out = {}
    for name, folder in ROWS:
        cells = []
        for m in ("dit", "dit_vote"):
            a = scores(folder, m)
            p = paired_difference(a, ref[m])
            kept = sum(a) / sum(ref[m])
            out[f"{folder}/{m}"] = {"mean": sum(a) / 50, "paired": p, "kept": kept}
            cells += [f"{sum(a) / 50:.2f}",
                      f"{p['mean_diff']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] "
                      f"{p['wins']}/{p['losses']}", f"{kept:.0%}"]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    Path(__file__).with_name("table.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
