"""Crash-safe file writing: the one atomic-write helper and the one JSONL helper ditkit uses.

Every file ditkit produces is written whole or not at all: the bytes go to a temporary file in
the same folder, are flushed to disk, and then replace the target with ``os.replace`` (atomic on
POSIX and Windows). A run killed at any moment therefore leaves either the old file or the new
one, never half of one. JSONL logs that grow by appending (evaluation predictions) are the one
exception: a kill can cut the last line, so `read_jsonl` drops an incomplete final line (with a
warning) and `append_jsonl` repairs the file before appending.

Permissions are those of a plain ``open(path, "w")``: a new file gets ``0o666`` less the umask (a
folder ``0o777`` less it), and a rewrite keeps the mode the old file had. (``tempfile`` makes its
files private, 0600, which would hide every report from the other users of a shared machine.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, DitkitError

log = logging.getLogger(__name__)


class DiskFullError(DitkitError, OSError):
    """The disk filled up while ditkit was writing; the previous file (if any) is intact."""


def _disk_full(path: Path, exc: OSError) -> DiskFullError:
    return DiskFullError(
        f"no space left on the device while writing {path}: the previous version (if any) is "
        "intact; free some space (or point --out at another disk) and rerun the same command"
    )


_umask_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS shows it (Linux's /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # elsewhere the only way to read it is to set it
        old = os.umask(0o077)  # meanwhile a file made by another thread is private, never public
        os.umask(old)
    return old


def _mode_for(path: Path, default: int) -> int:
    """The mode a write to ``path`` leaves: the old file's, else ``default`` less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return default & ~_umask()


def _default_modes(folder: Path) -> None:
    """Give everything under ``folder`` the mode a new file (0o666) or folder (0o777) gets."""
    umask = _umask()
    for root, dirs, files in os.walk(folder):
        for names, mode in ((dirs, 0o777), (files, 0o666)):
            for name in names:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, mode & ~umask)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    ``write`` gets the name of a fresh temporary file beside ``path`` (so the final rename never
    crosses file systems). On any failure the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path, 0o666))  # after write: a writer may have made a new file
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise _disk_full(path, exc) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name and move it onto ``folder`` when the block ends.

    Readers see the old folder or the complete new one. (Between the two renames that swap an
    existing folder there is an instant with neither; the stage that wrote it simply reruns.)
    Everything made inside gets the mode a plain write would give a new file or folder: some
    writers (safetensors' ``save_file``) make their files private.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        yield tmp
        _default_modes(tmp)
        os.chmod(tmp, _mode_for(folder, 0o777))
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON (keys sorted, so equal objects give equal bytes)."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False))


def read_json(path: str | Path, fix: str) -> Any:
    """The JSON in ``path``; a damaged file raises `DataError` naming it and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is damaged ({exc}): {fix}") from exc


def claim_settings(path: str | Path, settings: dict, what: str) -> None:
    """Write ``settings`` to ``path``, or check them against the ones there: a folder holding
    ``what`` (e.g. "a trigger search") made with other settings is refused, naming what differs."""
    path = Path(path)
    if path.exists():
        old = read_json(path, "delete the folder to start over")
        if old != settings:
            changed = sorted(k for k in {*settings, *old} if old.get(k) != settings.get(k))
            raise ConfigError(
                f"{path.parent} holds {what} with other settings ({', '.join(changed)}): use a "
                "new --out folder, or delete it to start over"
            )
    write_json(path, settings)


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Atomically write one JSON object per line."""
    return write_text(path, _jsonl(rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL file ([] when it does not exist).

    An incomplete last line (a run killed mid-append) is dropped with a warning; a bad line
    anywhere else means the file was damaged otherwise and raises `DataError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}): delete it and rerun the stage") from exc
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:  # no newline after it: an append that was cut short
                log.warning("%s: dropping an incomplete last line (interrupted write)", path)
                break
            raise DataError(
                f"{path}, line {i + 1}: not JSON ({exc.msg}); the file is damaged: delete it "
                "and rerun the stage that writes it"
            ) from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {i + 1}: expected a JSON object, got {type(row)}")
        rows.append(row)
    return rows


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows and flush them to disk; first cuts off an incomplete last line, if any."""
    path = Path(path)
    text = _jsonl(rows)
    if not text:
        return
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            complete = f.read(1) == b"\n"
        if not complete:
            write_jsonl(path, read_jsonl(path))
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(path, exc) from exc
        raise


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (read in chunks by `hashlib.file_digest`)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_kill_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Crash-test hook: SIGKILL this process at a named point when ``DITKIT_KILL_AT`` says so.

    ``DITKIT_KILL_AT=NAME@N`` kills at the N-th time ``NAME`` is reached (``NAME`` alone: the
    first). The kill tests use it to stop a real run at exact places; unset, it costs one lookup.
    """
    spec = os.environ.get("DITKIT_KILL_AT")
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _kill_counts[name] = _kill_counts.get(name, 0) + 1
    if _kill_counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
