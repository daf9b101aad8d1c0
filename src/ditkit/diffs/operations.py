"""What ``ditkit diff info`` and ``ditkit diff convert`` do, over any registered format."""

from __future__ import annotations

from pathlib import Path

from ..errors import DitkitError
from .checkpoint import FORMAT as CHECKPOINT
from .checkpoint import subtract, svd_truncate
from .core import Format
from .registry import detect_format, find_format, formats, load_diffs, one_of


def info(path: str | Path) -> dict:
    """Format, base model, modules, rank, alpha, norms and metadata of every diff at ``path``.

    >>> model, _ = load_model(str(tiny_model_dir))
    >>> path = save_diff(random_diff(model, 2, seed=0), tmp / "d.safetensors")
    >>> report = info(path)
    >>> report["format"], report["n_diffs"], report["diffs"][0]["rank"]
    ('ditkit', 1, 2)
    """
    fmt = detect_format(path)
    diffs = load_diffs(path)
    out = {"path": str(path), "format": fmt, "n_diffs": len(diffs), "diffs": []}
    for d in diffs:
        norms = d.norms()
        out["diffs"].append(
            {
                "base_model": d.meta.get("base_model"),
                "base_fingerprint": d.meta.get("base_fingerprint"),
                "n_modules": len(d.modules),
                "modules": d.modules,
                "rank": d.rank,
                "dense_modules": len(d.dense),
                "alpha": d.alpha,
                "norms": norms,
                "total_norm": sum(v * v for v in norms.values()) ** 0.5,
                "meta": d.meta,
            }
        )
    return out


def convert(
    src: str | Path,
    dst: str | Path,
    to: str | None = None,
    base: str | None = None,
    rank: int | None = None,
    align: bool = False,
) -> dict:
    """Write the diff(s) at ``src`` (any format) to ``dst`` in format ``to``; return a report.

    ``to`` defaults to ``ditkit`` for a ``.safetensors`` name, else ``peft``. A full checkpoint
    needs ``base`` (it becomes ``W_ft - W_base``); ``rank`` truncates every diff by SVD. Several
    diffs (a reference ``.pt``) go to ``DST-0000.SUFFIX``, ``DST-0001.SUFFIX``, ... The report holds
    ``source_format``, ``energy_kept`` (with ``rank`` or a checkpoint) and the paths ``written``.
    ``align`` (a checkpoint only) undoes weight symmetries first (`ditkit.symmetry.align`).

    A ditkit file to a PEFT folder, keeping its two strongest directions:

    >>> model, _ = load_model(str(tiny_model_dir))
    >>> src = save_diff(random_diff(model, 4, seed=0), tmp / "d.safetensors")
    >>> report = convert(src, tmp / "peft-r2", rank=2)
    >>> report["source_format"], load_diff(tmp / "peft-r2").rank, len(report["written"])
    ('ditkit', 2, 1)
    """
    # Every argument is checked before a model loads (seconds to minutes for a checkpoint).
    source = find_format(src)
    if source is CHECKPOINT and not base:
        raise DitkitError(f"{src} is a full checkpoint: pass --base MODEL to subtract")
    if align and source is not CHECKPOINT:
        raise DitkitError(f"--align: {src} is a {source.name} diff, not a full checkpoint")
    if rank is not None and rank < 1:
        raise DitkitError(f"--rank {rank}: the rank kept by SVD must be >= 1, e.g. --rank 8")
    writer = _writer(to or ("peft" if not str(dst).endswith(".safetensors") else "ditkit"))
    writer.check_target(dst)
    report: dict = {"source_format": source.name}
    if source is CHECKPOINT:
        diff, energy = subtract(src, base, rank, align)
        report.update(energy)
        diffs = [diff]
    else:
        diffs = source.load(Path(src))
        if rank is not None:
            pairs = [svd_truncate(d, rank) for d in diffs]
            diffs = [p[0] for p in pairs]
            report["energy_kept"] = [p[1]["energy_kept"] for p in pairs]
    out = Path(dst)
    written = []
    for i, d in enumerate(diffs):
        target = out if len(diffs) == 1 else out.with_name(f"{out.stem}-{i:04d}{out.suffix}")
        writer.save(d, target, base)
        written.append(str(target))
    report["written"] = written
    return report


def _writer(to: str) -> Format:
    """The registered format named ``to``, if ditkit can write it."""
    writable = one_of([f.name for f in formats() if f.save is not None])
    fmt = next((f for f in formats() if f.name == to), None)
    if fmt is None:
        raise DitkitError(f"--to {to}: unknown diff format; pass {writable}")
    if fmt.save is None:
        raise DitkitError(
            f"--to {to}: ditkit reads {fmt.describes} but does not write one; pass {writable}"
        )
    return fmt
