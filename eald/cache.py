"""Content-addressed stage cache: SQLite in WAL mode under `cache.dir`.

A key is the sha256 of a canonical JSON of everything that changes an answer (lmms-eval style):
the video's content fingerprint and window, modalities, sampling parameters, the component's
identity (weights fingerprint, prompts, generation parameters) and the stage's code version.
Only deterministic answers are stored, and never failures. Each answer is committed as soon as it
exists, so a run killed with `kill -9` loses nothing it had finished; WAL lets several sweep jobs
share one cache.
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


class StageCache:
    FILE = "stages.sqlite3"

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / self.FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the judge's worker threads
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries (stage TEXT NOT NULL, key TEXT NOT NULL, "
            "value TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (stage, key))"
        )
        self._db.commit()
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

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
