"""Run directories: atomic files, the JSONL log, the config guard, the manifest and `verify`."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from ditkit import cli, files
from ditkit.config import RunConfig, from_dict
from ditkit.errors import ConfigError, DataError
from ditkit.files import (
    DiskFullError,
    append_jsonl,
    atomic_folder,
    read_jsonl,
    write_json,
    write_jsonl,
)
from ditkit.rundir import Run, remove_stale_temps, verify


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    path = write_json(tmp_path / "scores.json", {"dit": 1})

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFullError, match=r"no space left .*scores\.json.*previous version"):
        write_json(path, {"dit": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"dit": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]  # no temporary file left


def test_atomic_folder_swaps_whole_folders_and_cleans_up_on_error(tmp_path):
    folder = tmp_path / "adapter"
    with atomic_folder(folder) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), atomic_folder(folder) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (folder / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_read_jsonl_drops_only_a_cut_last_line_and_append_repairs_it(tmp_path):
    path = tmp_path / "predictions.jsonl"
    write_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as f:
        f.write('{"a": 3, "b"')  # a kill in the middle of an append
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    append_jsonl(path, [{"a": 4}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}]
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(DataError, match=r"predictions\.jsonl, line 2: not JSON.*delete it"):
        read_jsonl(path)


def test_stale_temporary_files_are_removed_and_a_half_swapped_folder_restored(tmp_path):
    (tmp_path / "diffs").mkdir()
    (tmp_path / "diffs" / ".train-00001.safetensors.abc.tmp").write_bytes(b"half")
    (tmp_path / ".adapter.old").mkdir()
    (tmp_path / ".adapter.old" / "adapter_config.json").write_text("{}")
    assert remove_stale_temps(tmp_path) == 1
    assert not list(tmp_path.rglob("*.tmp"))
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_a_directory_made_by_another_config_is_refused_unless_forced(tmp_path):
    Run(RunConfig(), tmp_path).claim()
    changed = from_dict({"diffs": {"steps": 99}, "eval": {"batch_size": 3}})
    with pytest.raises(ConfigError, match=r"different config \(diffs\.steps: 24 -> 99\).*--force"):
        Run(changed, tmp_path).claim()
    Run(from_dict({"eval": {"batch_size": 3}}), tmp_path).claim()  # eval settings may change
    Run(changed, tmp_path).claim(force=True)
    assert json.loads((tmp_path / "config.json").read_text())["diffs"]["steps"] == 99


def test_claim_settings_refuses_a_folder_made_with_other_settings(tmp_path):
    path = tmp_path / "study" / "study.json"
    files.claim_settings(path, {"refine": 30, "reader": None}, "a study")
    files.claim_settings(path, {"refine": 30, "reader": None}, "a study")  # the same: resumes
    with pytest.raises(ConfigError, match=r"study holds a study with other settings \(reader, x\)"):
        files.claim_settings(path, {"refine": 30, "reader": "r", "x": 1}, "a study")
    path.write_text("{cut")
    with pytest.raises(DataError, match=r"study\.json is damaged.*delete the folder"):
        files.claim_settings(path, {}, "a study")


def test_jobs_from_before_labels_read_their_topic_as_the_label(tmp_path):
    write_jsonl(
        tmp_path / "data" / "jobs.jsonl", [{"diff_id": "t", "split": "test", "topic": "kites"}]
    )
    assert Run(RunConfig(), tmp_path).jobs("test")[0]["label"] == "kites"


def _fake_run(out: Path) -> Run:
    run = Run(RunConfig(), out)
    run.claim()
    write_jsonl(out / "data" / "jobs.jsonl", [{"diff_id": "test-00000", "split": "test"}])
    files.write_bytes(out / "diffs" / "test" / "test-00000.safetensors", b"weights")
    for stage in ("data", "diffs"):
        run.record_artifacts(stage)
    return run


def test_verify_names_missing_damaged_and_unrecorded_files_with_their_stage(tmp_path, capsys):
    _fake_run(tmp_path)
    assert verify(tmp_path) == []
    assert cli.main(["verify", str(tmp_path)]) == 0
    (tmp_path / "diffs" / "test" / "test-00000.safetensors").write_bytes(b"weightz")
    (tmp_path / "data" / "jobs.jsonl").unlink()
    files.write_bytes(tmp_path / "diffs" / "train" / "train-00000.safetensors", b"new")
    found = {(p.kind, p.path, p.stage) for p in verify(tmp_path)}
    assert found == {
        ("damaged", "diffs/test/test-00000.safetensors", "diffs"),
        ("missing", "data/jobs.jsonl", "data"),
        ("unrecorded", "diffs/train/train-00000.safetensors", "diffs"),
    }
    capsys.readouterr()
    assert cli.main(["verify", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert (
        "damaged    diffs/test/test-00000.safetensors: delete it, then rerun stage diffs "
        f"(ditkit run {tmp_path}/config.json --out {tmp_path} --stage diffs)"
    ) in out
    assert "missing    data/jobs.jsonl: rerun stage data" in out
    assert "2 artifact(s)" in err


def test_verify_needs_a_run_directory(tmp_path):
    with pytest.raises(DataError, match=r"no config\.json"):
        verify(tmp_path)
    Run(RunConfig(), tmp_path).claim()
    with pytest.raises(DataError, match=r"manifest\.json is missing"):
        verify(tmp_path)


def test_a_damaged_dit_checkpoint_names_the_folder_and_the_fix(tmp_path):
    import torch

    from ditkit.train_dit import _load_checkpoint

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "state.json").write_text('{"epoch": 1}')
    (ckpt / "adapter.safetensors").write_bytes(b"\x00" * 5)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(DataError, match=r"checkpoint is damaged .*delete that folder"):
        _load_checkpoint(ckpt, {}, opt)
