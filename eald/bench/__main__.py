"""``python -m eald.bench [name ...]``: run the named benchmarks, or all of them without a name.

A benchmark is a function taking the cache folder and returning a JSON-friendly summary; add
new ones to ``BENCHMARKS``. The exit status is 0 whatever the numbers: benchmarks report.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eald.bench import deid, judge, mmod, probe, report, sampling, voice, zeroshot

BENCHMARKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "sampling": sampling.run,
    "judge": judge.run,
    "mmod": mmod.run,
    "deid": deid.run,
    "voice": voice.run,
    "probe": probe.run,
    "zeroshot": zeroshot.run,
    "report": report.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eald.bench", description="Run eald benchmarks (all when none is named)."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {sorted(BENCHMARKS)}")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/bench"),
        help="folder for generated inputs and JSON results (default: .cache/bench)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(sorted(BENCHMARKS)))
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    names = list(dict.fromkeys(args.names)) or list(BENCHMARKS)
    args.cache.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"== benchmark: {name} ==", flush=True)
        t0 = time.perf_counter()
        BENCHMARKS[name](args.cache)
        print(f"== {name} done in {time.perf_counter() - t0:.1f} s ==\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
