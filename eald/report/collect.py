"""Find and load `eald-run` run directories; group them into settings.

A run directory is any directory holding `.hydra/` (single runs and multirun job dirs alike), so
sweeps re-run into another directory merge naturally. A job dir without `metrics.json` is kept as
a *missing* run: it crashed or is still running, and hiding it would overstate a sweep.

A setting is what the run declared in `identity.json`: its task, the config sections that task
reads, and its components' own identities (eald.registry; the seed is not part of it). Runs from
before identity.json fall back to the resolved config minus the seed, Hydra's own keys and what
only records or stores results (`IGNORED`). Its table name uses `SETTING_KEYS`; runs whose names agree but whose configs differ elsewhere (another
dataset root, backbone weights, sampling or prompt) become separate settings, told apart by a
`variant` naming the keys that differ. Two finished runs of one setting and seed are a
collision: the newest is kept and the report lists the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from eald.cluster import SUMMARY

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
# Top-level config keys that cannot change a prediction (the seed is grouped over, not merged).
IGNORED = ("seed", "hydra", "logger", "cache", "deid", "audit")
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
    variant: str | None = None  # set by `collect`: what tells it from same-named settings
    declared: dict[str, Any] | None = None  # identity.json: the identities the run declared

    @property
    def ok(self) -> bool:
        return self.metrics is not None

    @property
    def seed(self) -> Any:
        return self.config.get("seed", _override_value(self.overrides, "seed"))

    @property
    def setting(self) -> Setting:
        return (*setting_of(self.config, self.overrides), ("variant", self.variant))

    @cached_property
    def identity(self) -> str:
        """A hash of what the run declared defines its setting (identity.json: the task's
        config sections and its components' identities); for runs written before identity.json
        existed, of everything in the config that can change a prediction."""
        if self.declared is not None:
            body = json.dumps(self.declared, sort_keys=True, default=str).encode()
            return hashlib.sha256(body).hexdigest()[:16]
        return config_identity(self.config, self.overrides)


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


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def relevant(config: dict[str, Any]) -> dict[str, Any]:
    """The config's dotted keys that can change a prediction."""
    return {k: v for k, v in _flat(config).items() if k.split(".")[0] not in IGNORED}


def config_identity(config: dict[str, Any], overrides: Sequence[str] = ()) -> str:
    body = relevant(config) if config else sorted(setting_of(config, overrides))
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def assign_variants(runs: list[Run]) -> None:
    """Name the keys that tell apart runs whose table names agree but whose settings do not
    (of identity.json where the runs have it, e.g. `components.backbone.weights.fingerprint`)."""
    by_name: dict[Setting, list[Run]] = {}
    for r in runs:
        by_name.setdefault(setting_of(r.config, r.overrides), []).append(r)
    for named in by_name.values():
        flats = {r.identity: _flat(r.declared) if r.declared is not None else relevant(r.config)
                 for r in named}  # fmt: skip
        if len(flats) < 2:
            continue
        keys = sorted({k for f in flats.values() for k in f})
        differ = [k for k in keys if len({repr(f.get(k)) for f in flats.values()}) > 1]
        more = f" (+{len(differ) - 4} more)" if len(differ) > 4 else ""
        for r in named:
            f = flats[r.identity]
            r.variant = ", ".join(f"{k}={f.get(k)}" for k in differ[:4]) + more


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
    ifile = path / "identity.json"
    declared = json.loads(ifile.read_text()) if ifile.is_file() else None
    return Run(path, config, [str(o) for o in overrides], metrics, preds, mtime, declared=declared)


def dedupe(runs: Iterable[Run], collisions: list[dict[str, Any]] | None = None) -> list[Run]:
    """One run per (setting identity, seed): finished beats missing, then the newest wins.
    A finished run that loses is a collision, appended to ``collisions``."""
    best: dict[tuple[str, str], Run] = {}
    for r in runs:
        key = (r.identity, repr(r.seed))
        cur = best.get(key)
        if cur is None:
            best[key] = r
            continue
        keep, drop = (r, cur) if (r.ok, r.mtime) > (cur.ok, cur.mtime) else (cur, r)
        best[key] = keep
        if drop.ok and collisions is not None:
            collisions.append({"kept": str(keep.path), "dropped": str(drop.path),
                               "seed": keep.seed})  # fmt: skip
    return sorted(best.values(), key=lambda r: (repr(r.setting), repr(r.seed)))


def cluster_job(run: Run) -> dict[str, Any] | None:
    """The run's row in its sweep's sweep_summary.json (SLURM job id, final state, error), if
    the sweep ran through eald's cluster launcher."""
    summary = run.path.parent / SUMMARY
    if not summary.is_file():
        return None
    try:
        jobs = json.loads(summary.read_text()).get("jobs", [])
    except (OSError, ValueError):
        return None  # a damaged summary only loses the label; the run is still listed
    here = run.path.resolve()
    return next(
        (j for j in jobs if j.get("run_dir") and Path(j["run_dir"]).resolve() == here), None
    )


def collect(paths: Iterable[Path], collisions: list[dict[str, Any]] | None = None) -> list[Run]:
    runs = [load_run(d) for d in find_run_dirs(paths)]
    assign_variants(runs)
    return dedupe(runs, collisions)


def group(runs: Iterable[Run]) -> dict[Setting, list[Run]]:
    """Finished runs by setting, in first-seen order (missing runs are reported separately)."""
    out: dict[Setting, list[Run]] = {}
    for r in runs:
        if r.ok:
            out.setdefault(r.setting, []).append(r)
    return out
