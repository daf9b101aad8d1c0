"""What every task's data files share: shipped files and CSV reading with clear errors."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import DataError


@dataclass(frozen=True)
class Topic:
    """A topic and the other names that count as naming it (hidden topics, text sources)."""

    topic: str
    category: str
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.topic, *self.aliases)


def data_file(name: str) -> Path:
    """A data file shipped in the package (``ditkit/data/NAME``)."""
    return Path(str(resources.files("ditkit") / "data" / name))


def read_csv(
    path: str | Path | None, default: str, columns: list[str], key: str | None = None
) -> tuple[Path, list[tuple[int, dict]]]:
    """``(line, row)`` pairs of a UTF-8 CSV whose header holds ``columns``.

    ``line`` is where the row ends in the file (a quoted field may span lines). ``DataError``
    names the file, the line and the fix; ``key`` is the config key that names the file
    (default ``task_options.<default stem>_file``).
    """
    key = key or f"task_options.{default.removesuffix('.csv')}_file"
    path = Path(path) if path else data_file(default)
    need = f"a header line {','.join(columns)} and at least one row"
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, r) for r in reader]
            header = [h.strip() for h in reader.fieldnames or []]
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}; check the path ({key})") from e
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8"
        ) from None
    except csv.Error as e:
        raise DataError(f"{path} is not a readable CSV file ({e}); it needs {need}") from None
    if not header:
        raise DataError(f"{path} is empty: it needs {need}")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)} (header: {','.join(header)}); "
            f"the first line must be {','.join(columns)}"
        )
    if not rows:
        raise DataError(f"{path} has a header but no rows: add at least one row below it")
    out = []
    for line, r in rows:
        r = {(k or "").strip(): v for k, v in r.items()}
        for c in columns:
            if r.get(c) is None:
                raise DataError(
                    f"{path} line {line}: no value for column {c!r}; every row needs "
                    f"{len(columns)} comma-separated fields ({','.join(columns)})"
                )
        out.append((line, r))
    return path, out
