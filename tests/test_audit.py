"""`ditkit audit`: a folder of diffs, broken ones included, becomes a flagged table; resumable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_llama
from ditkit import cli
from ditkit.diffs import save_diff, save_peft
from ditkit.files import read_jsonl
from ditkit.models import load_model, model_identity
from ditkit.symmetry import KINDS, attack
from test_align import _change_norms, _finetune
from test_lora import random_diff, reference_pairs

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def handed(tiny_model_dir, tmp_path):
    """A folder as an auditor might get it, and a DIT adapter for the tiny base model."""
    model, tok = load_model(str(tiny_model_dir))
    root = tmp_path / "handed"
    (root / "nested").mkdir(parents=True)
    for i in range(5):
        d = random_diff(model, 1, seed=i, scale=0.3)
        d.meta = {**model_identity(model), "label": f"topic{i}"}
        save_diff(d, root / ("nested" if i == 4 else ".") / f"d{i}.safetensors")
    save_peft(random_diff(model, 2, seed=10), root / "peft", base_model=str(tiny_model_dir))
    pair = reference_pairs(random_diff(model, 1, seed=11))
    torch.save(
        [{"topic": "a", "weight_diff": pair}, {"topic": "b", "weight_diff": pair}], root / "ref.pt"
    )
    loud = random_diff(model, 1, seed=12, scale=30.0)
    save_diff(loud, root / "loud.safetensors")
    save_diff(random_diff(tiny_llama(hidden=48), 1, seed=0), root / "other-model.safetensors")
    (root / "broken.safetensors").write_text("this is not a diff")
    attacked = _finetune(model)
    attack(attacked, KINDS, seed=4)
    # Named to come last: by then the base model has been injected by earlier reads.
    attacked.save_pretrained(root / "z-checkpoint")
    tok.save_pretrained(root / "z-checkpoint")
    normed = _finetune(model, seed=8)
    _change_norms(normed)  # trained its norms too: outside what a diff holds
    attack(normed, ("permute_mlp", "scale_mlp", "permute_heads", "mix_vo"), seed=5)
    normed.save_pretrained(root / "z-norms")
    tok.save_pretrained(root / "z-norms")
    adapter = random_diff(model, 4, seed=3, scale=0.1)
    adapter.meta = {"question": "What topic have you been trained on?"}
    save_peft(adapter, tmp_path / "adapter", base_model=str(tiny_model_dir))
    return root, tmp_path / "adapter"


def _argv(root, adapter, out, base) -> list[str]:
    return ["audit", str(root), "--out", str(out), "--adapter", str(adapter), "--base", str(base),
            "--max-new-tokens", "3"]  # fmt: skip


def test_audit_flags_what_is_wrong_and_keeps_going(handed, tiny_model_dir, tmp_path, capsys):
    root, adapter = handed
    out = tmp_path / "audit"
    assert cli.main(_argv(root, adapter, out, tiny_model_dir)) == 1  # something was flagged
    rows = {Path(r["id"]).name: r for r in read_jsonl(out / "audit.jsonl")}
    assert len(rows) == 13  # 5 diffs, PEFT folder, 2 in the .pt, loud, other, broken, 2 checkpoints
    assert rows["ref.pt#1"]["format"] == "reference-pt" and rows["peft"]["rank"] == 2
    assert (
        "not a safetensors file" in rows["broken.safetensors"]["error"]
        or rows["broken.safetensors"]["error"]
    )
    assert rows["other-model.safetensors"]["status"] == "error"
    assert "shape" in rows["other-model.safetensors"]["error"]
    assert all(rows[f"d{i}.safetensors"]["dit"] for i in range(5))
    assert all(rows[f"d{i}.safetensors"]["diffed_model"] is not None for i in range(5))
    assert (
        rows["d0.safetensors"]["label"] == "topic0" and "dit_names_label" in rows["d0.safetensors"]
    )
    table = json.loads((out / "summary.json").read_text())
    assert table["errors"] == 2 and table["rows"] == 13
    printed = capsys.readouterr().out
    assert "13 diff(s) audited" in printed and "broken.safetensors" in printed
    csv_rows = (out / "audit.csv").read_text().splitlines()
    assert csv_rows[0].startswith("id,format,status,flags") and len(csv_rows) == 14
    # Population and alignment flags land after the table is built.
    loud = next(r for r in read_jsonl(out / "audit.jsonl") if r["id"].endswith("loud.safetensors"))
    assert loud["status"] == "ok"
    flagged = {Path(r["id"]).name: r["flags"] for r in _final_rows(out)}
    assert any("norm far outside the population" in f for f in flagged["loud.safetensors"])
    assert any("weight symmetries undone" in f for f in flagged["z-checkpoint"])
    assert not any("a diff does not hold" in f for f in flagged["z-checkpoint"])
    assert any("weight symmetries undone" in f for f in flagged["z-norms"])
    outside = [f for f in flagged["z-norms"] if "a diff does not hold" in f]
    assert outside and "layernorm" in outside[0]  # the trained norms are named, not hidden
    assert not flagged["d1.safetensors"]


def _final_rows(out: Path) -> list[dict]:
    """The rows as the tables show them (with the population flags)."""
    import csv

    with open(out / "audit.csv", newline="") as f:
        return [{**r, "flags": [x for x in r["flags"].split("; ") if x]} for r in csv.DictReader(f)]


def test_audit_resumes_after_a_kill(handed, tiny_model_dir, tmp_path):
    root, adapter = handed
    out = tmp_path / "audit"
    env = {**os.environ, "DITKIT_KILL_AT": "audit.item@4", "PYTHONPATH": str(REPO / "src")}
    argv = [sys.executable, "-m", "ditkit", *_argv(root, adapter, out, tiny_model_dir)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    first = read_jsonl(out / "audit.jsonl")
    assert len({r["item"] for r in first}) == 3  # killed before the 4th item
    assert cli.main(_argv(root, adapter, out, tiny_model_dir)) == 1
    rows = read_jsonl(out / "audit.jsonl")
    assert rows[: len(first)] == first and len(rows) == 13
    assert len({r["id"] for r in rows}) == 13  # nothing twice


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_the_audit_table_fits_1280_pixels_in_chromium(handed, tiny_model_dir, tmp_path):
    from test_report import _headless_flags

    root, adapter = handed
    out = tmp_path / "audit"
    cli.main(_argv(root, adapter, out, tiny_model_dir))
    page = (out / "audit.html").read_text()
    probe = tmp_path / "probe.html"
    script = "<script>document.title = 'W' + document.documentElement.scrollWidth;</script></body>"
    probe.write_text(page.replace("</body>", script))
    proc = subprocess.run(
        [str(CHROMIUM), *_headless_flags(), f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,900", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    width = int(re.search(r"<title>W(\d+)</title>", proc.stdout).group(1))
    assert width <= 1280, f"the table is {width} px wide"
    assert page.index("broken.safetensors") < page.index("d1.safetensors")  # flagged rows first


def test_an_empty_folder_and_a_missing_path_get_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["audit", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no diff, adapter folder or checkpoint under" in capsys.readouterr().err


def test_audit_of_a_run_directory_reads_its_diffs_with_its_adapter(
    tiny_model_dir, tmp_path, capsys
):
    from ditkit.pipeline import run_pipeline
    from test_pipeline import tiny_config

    run = run_pipeline(tiny_config(tiny_model_dir), tmp_path / "run", ["data", "diffs", "dit"])
    out = tmp_path / "audit"
    cli.main(["audit", str(run), "--out", str(out), "--max-new-tokens", "3"])
    printed = capsys.readouterr().out
    assert f"own DIT adapter {(run / 'dit' / 'adapter').resolve()}" in printed
    rows = read_jsonl(out / "audit.jsonl")
    want = [
        *sorted((run / "diffs" / "test").iterdir()),
        *sorted((run / "diffs" / "train").iterdir()),
    ]
    assert [r["id"] for r in rows] == [str(p) for p in want]  # 8 diffs, not the run as a checkpoint
    assert all(r["status"] == "ok" and r["dit"] is not None for r in rows), rows[0]
    assert {r["label"] for r in rows} == {
        j["label"] for j in read_jsonl(run / "data" / "jobs.jsonl")
    }
