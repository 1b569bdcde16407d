"""The stage cache shared by sweep jobs: processes that open a new cache file at the same moment
all set it up (SQLite answers "database is locked" to the losers of the switch to WAL, which a
SLURM sweep hit: its jobs start together), and every answer any of them wrote is there."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from eald.cache import StageCache

WRITER = """
import sys, time
from eald.cache import StageCache
start = float(sys.argv[2])
while time.time() < start:
    pass
c = StageCache(sys.argv[1])
for i in range(20):
    c.put("describe", f"{sys.argv[3]}-{i}", {"text": str(i)})
c.close()
"""


def test_processes_opening_a_new_cache_together(tmp_path):
    procs_per_round, rounds = 6, 4
    for r in range(rounds):
        root = tmp_path / f"cache{r}"
        start = time.time() + 2.0  # every process is imported and spinning by then
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(start), str(k)],
                                  stderr=subprocess.PIPE, text=True)
                 for k in range(procs_per_round)]  # fmt: skip
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * procs_per_round, "\n".join(errors)
        c = StageCache(root)
        assert c.count("describe") == procs_per_round * 20
        assert c.get("describe", "3-7") == {"text": "7"}
        c.close()


def test_network_filesystems_get_the_rollback_journal(tmp_path):
    from eald.cache import filesystem_type, journal_mode

    mounts = "\n".join([
        "/dev/sda1 / ext4 rw 0 0",
        "nfs1:/export/home /home nfs4 rw,vers=4.2 0 0",
        "lustre@tcp:/scratch /scratch lustre rw 0 0",
        "tmpfs /home/u/tmp tmpfs rw 0 0",
        "/dev/sdb1 /mnt/with\\040space xfs rw 0 0",
    ])  # fmt: skip
    assert filesystem_type(Path("/home/u/run/cache"), mounts) == "nfs4"
    assert filesystem_type(Path("/home/u/tmp/x"), mounts) == "tmpfs"  # the longest mount point
    assert filesystem_type(Path("/scratch"), mounts) == "lustre"
    assert filesystem_type(Path("/homework"), mounts) == "ext4"  # a prefix is not a parent
    assert filesystem_type(Path("/mnt/with space/c"), mounts) == "xfs"
    # this machine's temporary directory is local: WAL, as the cache opens it
    assert journal_mode(tmp_path) == "wal"
    c = StageCache(tmp_path / "c")
    assert c._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal" and c.journal == "wal"
    c.close()
