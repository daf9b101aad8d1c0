"""Render a ditkit HTML report to a PNG with headless Chromium (offline, throwaway profile).

Usage: python scripts/screenshot_report.py RUN_DIR_OR_INDEX_HTML [--out PNG] [--chromium PATH]
Exits 2 if Chromium is missing, 1 if it fails to write the screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Offline and quiet: no first-run page, no background connections (refused here anyway).
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_html(target: Path) -> Path:
    if target.is_dir():
        for candidate in (target / "report" / "index.html", target / "index.html"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no report/index.html under {target}: write the report first")
    if not target.is_file():
        raise FileNotFoundError(f"{target} does not exist")
    return target


def screenshot(html: Path, out: Path, chromium: str, width: int = 1280, height: int = 2000) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ditkit-chromium-") as profile:
        cmd = [
            chromium,
            *HEADLESS_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out.resolve()}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(
            f"chromium exited with {proc.returncode} and wrote no screenshot to {out}:\n"
            f"{proc.stderr.strip()[-2000:]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="run folder, report folder or index.html")
    parser.add_argument("--out", type=Path, help="PNG path (default: beside index.html)")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM, help="Chromium binary")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)

    chromium = shutil.which(args.chromium)
    if chromium is None:
        print(
            f"error: Chromium not found at {args.chromium}; install it (e.g. apt-get install "
            "chromium) or pass --chromium PATH",
            file=sys.stderr,
        )
        return 2
    try:
        html = find_html(args.target)
        out = args.out or html.with_name("screenshot.png")
        screenshot(html, out, chromium, args.width, args.height)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
