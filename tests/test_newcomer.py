"""A new user's first hour: file permissions, cheap checks before a model loads, readable logs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import stat
import struct
import subprocess
import sys
import termios

import pytest

from conftest import tiny_llama
from ditkit import cli, models
from ditkit.diffs import save_diff, save_peft
from ditkit.errors import ModelLoadError
from ditkit.files import atomic_folder, write_bytes, write_json, write_text
from test_lora import random_diff

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"),
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
    ids=["umask-022", "umask-027"],
)
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "a")
        write_json(tmp_path / "b.json", {"b": 1})
        write_bytes(tmp_path / "c.bin", b"c")
        save_diff(random_diff(tiny_llama(), 1, seed=0), tmp_path / "d.safetensors")
        with atomic_folder(tmp_path / "folder") as tmp:
            write_text(tmp / "inside.txt", "x")
        save_peft(random_diff(tiny_llama(), 1, seed=1), tmp_path / "adapter")
    finally:
        os.umask(old)
    found = {p.relative_to(tmp_path).as_posix(): mode(p) for p in tmp_path.rglob("*")}
    assert found == {
        "a.txt": file_mode,
        "b.json": file_mode,
        "c.bin": file_mode,
        "d.safetensors": file_mode,
        "folder": folder_mode,
        "folder/inside.txt": file_mode,
        "adapter": folder_mode,
        "adapter/adapter_config.json": file_mode,
        "adapter/adapter_model.safetensors": file_mode,
        "adapter/ditkit.json": file_mode,
    }


@posix_only
def test_a_rewrite_keeps_the_mode_the_file_had(tmp_path):
    path = write_text(tmp_path / "private.json", "{}")
    path.chmod(0o600)
    write_json(path, {"new": True})
    assert mode(path) == 0o600 and "new" in path.read_text()


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", refuse)


@pytest.mark.parametrize(
    "case", ["missing diff", "unknown format", "missing adapter", "no shipped"]
)
def test_describe_checks_its_paths_before_loading_the_model(
    case, tmp_path, tiny_model_dir, no_model_loads, capsys
):
    diff = save_diff(random_diff(tiny_llama(), 1, seed=0), tmp_path / "d.safetensors")
    argv, named = ["describe", "--diff", str(diff)], str(diff)
    if case == "missing diff":
        argv[2] = named = str(tmp_path / "nonexistent.safetensors")
    elif case == "unknown format":
        argv[2] = named = str(tmp_path / "d.txt")
        (tmp_path / "d.txt").write_text("hello")
    elif case == "missing adapter":
        named = str(tmp_path / "no-adapter")
        argv += ["--adapter", named]
    else:  # a base model no adapter is shipped for, and no --adapter
        argv += ["--base", str(tiny_model_dir)]
        named = "no DIT adapter is shipped"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ditkit: error: ") and err.count("\n") == 1
    assert named in err


def test_diff_convert_checks_its_arguments_before_loading_a_model(
    tmp_path, tiny_model_dir, no_model_loads, capsys
):
    ckpt, base = str(tiny_model_dir), str(tiny_model_dir)  # a checkpoint folder as the source
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    cases = [
        (["--rank", "0"], str(tmp_path / "out.safetensors"), "--rank 0: the rank kept by SVD"),
        (["--to", "ditkit"], str(tmp_path / "folder"), "is a folder but a ditkit diff is one file"),
        (["--to", "peft"], str(tmp_path / "file"), "is a file but a PEFT adapter is a folder"),
    ]
    for extra, dst, message in cases:
        assert cli.main(["diff", "convert", ckpt, dst, "--base", base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert (tmp_path / "file").is_file()  # not replaced by a folder


def test_a_device_the_machine_lacks_is_refused_before_loading(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(models.torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ModelLoadError, match="device 'cuda': torch sees 0 CUDA GPU"):
        models.load_model(str(tiny_model_dir), device="cuda")
    with pytest.raises(ModelLoadError, match="device 'gpu' is not cpu, cuda, cuda:N, mps or auto"):
        models.load_model(str(tiny_model_dir), device="gpu")


def test_loading_a_model_shows_no_transformers_bar_and_restores_the_setting(tiny_model_dir, capfd):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    models.load_model(str(tiny_model_dir))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


@pytest.mark.slow  # runs the command line twice, in a file and in a terminal
def test_stderr_to_a_file_holds_log_lines_not_progress_bars(tmp_path, tiny_model_dir):
    model, _ = models.load_model(str(tiny_model_dir))
    diff = random_diff(model, 1, seed=2)
    diff.meta = {"label": "chess"}
    adapter = random_diff(model, 4, seed=3)
    adapter.meta = {"question": "What topic have you been trained on?"}
    save_diff(diff, tmp_path / "d.safetensors")
    save_peft(adapter, tmp_path / "adapter", base_model=str(tiny_model_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    argv = ["describe", "--diff", str(tmp_path / "d.safetensors"), "--adapter"]
    argv += [str(tmp_path / "adapter"), "--max-new-tokens", "3"]
    with open(tmp_path / "stderr.log", "wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "ditkit", *argv], env=env, stderr=log, stdout=subprocess.PIPE
        )
    err = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, err
    assert "\r" not in err and "\x1b[" not in err and "Loading weights" not in err
    assert "describe" not in err  # the describe loop's bar
    # On a terminal the same command draws its bars (tqdm's disable=None decides, per stream).
    master, slave = pty.openpty()
    # 24 x 80: a new pty reports 0 columns, and tqdm draws nothing in 0 columns
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ditkit", *argv], env=env, stderr=slave, stdout=subprocess.PIPE
    )
    os.close(slave)
    drawn = b""
    with contextlib.suppress(OSError):  # EIO once the child has exited and all is read
        while chunk := os.read(master, 1 << 16):  # read as it goes: a pty buffers little
            drawn += chunk
    proc.wait()
    os.close(master)
    assert proc.returncode == 0 and b"describe" in drawn and b"\r" in drawn, drawn
