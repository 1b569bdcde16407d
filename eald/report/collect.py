"""Find and load `eald-run` run directories; group them into settings.

A run directory is any directory holding `.hydra/` (single runs and multirun job dirs alike), so
sweeps re-run into another directory merge naturally. A job dir without `metrics.json` is kept as
a *missing* run: it crashed or is still running, and hiding it would overstate a sweep.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The config keys that define a setting; everything else (paths, loggers, cache) is incidental.
SETTING_KEYS: tuple[str, ...] = (
    "task",
    "protocol.name",
    "modality.name",
    "sequence.fraction",
    "backbone.name",
    "judge.name",
    "baseline.name",
)
# Override prefixes that never define a setting (used only when config.yaml is absent).
_IGNORED_OVERRIDES = ("seed", "hydra.", "dataset.root", "cache.", "logger", "experiment")

Setting = tuple[tuple[str, Any], ...]


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    overrides: list[str]
    metrics: dict[str, Any] | None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    mtime: float = 0.0

    @property
    def ok(self) -> bool:
        return self.metrics is not None

    @property
    def seed(self) -> Any:
        return self.config.get("seed", _override_value(self.overrides, "seed"))

    @property
    def setting(self) -> Setting:
        return setting_of(self.config, self.overrides)


def _override_value(overrides: Sequence[str], key: str) -> str | None:
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k == key:
            return v
    return None


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """`config["a"]["b"]` for "a.b"; None when any part is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def setting_of(config: dict[str, Any], overrides: Sequence[str]) -> Setting:
    if config:
        return tuple((k, lookup(config, k)) for k in SETTING_KEYS)
    # No resolved config: fall back to the overrides, minus seeds and paths.
    kept = sorted(o for o in overrides if not o.lstrip("+~").startswith(_IGNORED_OVERRIDES))
    return tuple(tuple(o.split("=", 1)) if "=" in o else (o, None) for o in kept)  # type: ignore


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    found: set[Path] = set()
    for p in paths:
        p = Path(p)
        if (p / ".hydra").is_dir():
            found.add(p.resolve())
        if p.is_dir():
            found.update(h.parent.resolve() for h in p.rglob(".hydra") if h.is_dir())
    # Hydra's own output folders inside a run (e.g. wandb) never hold `.hydra`, so this is safe.
    return sorted(found)


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def load_run(path: Path) -> Run:
    config = _read_yaml(path / ".hydra" / "config.yaml") or {}
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml") or []
    mfile = path / "metrics.json"
    metrics = None
    if mfile.is_file():
        try:
            metrics = json.loads(mfile.read_text())
        except json.JSONDecodeError:  # a half-written file counts as missing, not as a crash
            metrics = None
    preds: list[dict[str, Any]] = []
    pfile = path / "predictions.jsonl"
    if metrics is not None and pfile.is_file():
        preds = [json.loads(line) for line in pfile.read_text().splitlines() if line.strip()]
    mtime = (mfile if mfile.is_file() else path).stat().st_mtime
    return Run(path, config, [str(o) for o in overrides], metrics, preds, mtime)


def dedupe(runs: Iterable[Run]) -> list[Run]:
    """One run per (setting, seed): finished beats missing, then the newest wins."""
    best: dict[tuple[Setting, str], Run] = {}
    for r in runs:
        key = (r.setting, repr(r.seed))
        cur = best.get(key)
        if cur is None or (r.ok, r.mtime) > (cur.ok, cur.mtime):
            best[key] = r
    return sorted(best.values(), key=lambda r: (repr(r.setting), repr(r.seed)))


def collect(paths: Iterable[Path]) -> list[Run]:
    return dedupe(load_run(d) for d in find_run_dirs(paths))


def group(runs: Iterable[Run]) -> dict[Setting, list[Run]]:
    """Finished runs by setting, in first-seen order (missing runs are reported separately)."""
    out: dict[Setting, list[Run]] = {}
    for r in runs:
        if r.ok:
            out.setdefault(r.setting, []).append(r)
    return out
