"""Content-addressed stage cache: SQLite in WAL mode under `cache.dir`.

A key is the sha256 of a canonical JSON of everything that changes an answer (lmms-eval style):
the video's content fingerprint and window, modalities, sampling parameters, the component's
identity (weights fingerprint, prompts, generation parameters) and the stage's code version.
Only deterministic answers are stored, and never failures. Each answer is committed as soon as it
exists, so a run killed with `kill -9` loses nothing it had finished; WAL lets several sweep jobs
share one cache. WAL needs memory shared by every process, so it works only on one host: on a
network filesystem (a cluster's shared home, where jobs on several nodes and requeued jobs meet)
the cache uses SQLite's rollback journal with file locks instead (`journal_mode`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any


def cache_key(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# Filesystems that several hosts mount at once (/proc/mounts type names)
NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph",
              "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.ceph", "orangefs", "panfs")  # fmt: skip


def filesystem_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding `path` (the longest mount point above it in
    /proc/mounts); None where that cannot be read."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target, best, kind = str(path.resolve()), -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def journal_mode(directory: Path) -> str:
    """WAL on a local filesystem; the rollback journal (DELETE) on a network one."""
    return "delete" if filesystem_type(directory) in NETWORK_FS else "wal"


class StageCache:
    FILE = "stages.sqlite3"

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / self.FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the judge's worker threads
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self.journal = journal_mode(self.path.parent)
        self._setup()
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    def _setup(self, wait_s: float = 60.0) -> None:
        """Journal mode and the table. Sweep jobs that start together race to set up a new cache
        file, and SQLite answers "database is locked" at once to the losers of the switch to
        WAL (the busy timeout does not cover it): retried here until `wait_s`."""
        deadline = time.monotonic() + wait_s
        delay = 0.01
        while True:
            try:
                self._db.execute(f"PRAGMA journal_mode={self.journal}")
                self._db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS entries (stage TEXT NOT NULL, key TEXT NOT NULL, "
                    "value TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (stage, key))"
                )
                self._db.commit()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise sqlite3.OperationalError(f"{self.path}: {err}") from err
                self._db.rollback()
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def get(self, stage: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM entries WHERE stage = ? AND key = ?", (stage, key)
            ).fetchone()
            (self.hits if row else self.misses)[stage] += 1
        return json.loads(row[0]) if row else None

    def put(self, stage: str, key: str, value: dict[str, Any]) -> None:
        text = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries (stage, key, value, created) VALUES (?, ?, ?, ?)",
                (stage, key, text, time.time()),
            )
            self._db.commit()

    def count(self, stage: str | None = None) -> int:
        with self._lock:
            if stage is None:
                return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            q = "SELECT COUNT(*) FROM entries WHERE stage = ?"
            return self._db.execute(q, (stage,)).fetchone()[0]

    def stats(self) -> dict[str, dict[str, int]]:
        stages = sorted(set(self.hits) | set(self.misses))
        return {s: {"hits": self.hits[s], "misses": self.misses[s]} for s in stages}

    def close(self) -> None:
        with self._lock:
            self._db.close()
