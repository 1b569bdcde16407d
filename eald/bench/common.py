"""Helpers shared by the benchmarks: atomic outputs, repeated timing, tables, versions."""

from __future__ import annotations

import importlib.metadata
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temp path beside `path` (same suffix), renamed onto `path` if the block succeeds."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def timed(
    fn: Callable[[], Any], repeats: int = 3, slow_s: float = 5.0
) -> tuple[list[float], list[float], Any]:
    """Run `fn` up to `repeats` times (once only when the first run takes over `slow_s` seconds).
    Returns the wall times, the process CPU times (all threads; less sensitive than wall time to
    other load on the machine) and the last result. Exceptions propagate."""
    wall: list[float] = []
    cpu: list[float] = []
    out: Any = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if wall[0] > slow_s:
            break
    return wall, cpu, out


def fmt(x: float | None, unit: str = "", digits: int = 2) -> str:
    """A number for a table cell; '-' for a missing one."""
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with columns padded to their widest cell (numbers right-aligned)."""
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for c, w in zip(cells, widths, strict=True):
            c = str(c)
            numeric = c[:1].isdigit() or c[:1] == "-" and c[1:2].isdigit()
            out.append(c.rjust(w) if numeric else c.ljust(w))
        return "| " + " | ".join(out) + " |"

    return "\n".join(
        [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line(r) for r in rows]
    )


def version(dist: str) -> str:
    """Installed version of a distribution, or 'missing'."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"
