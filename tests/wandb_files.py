"""Read what wandb wrote offline: the run's `.wandb` transaction log (LevelDB log format with a
7-byte W&B header, records are wandb protobufs). wandb >= 0.19 has no Python reader for it."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32768
_HEADER = 7  # b":W&B" + magic (2 bytes) + version (1 byte)


def read_records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb transaction log"
    out, buf, pos = [], b"", _HEADER
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # FULL
            out.append(chunk)
        elif kind == 2:  # FIRST
            buf = chunk
        elif kind == 3:  # MIDDLE
            buf += chunk
        elif kind == 4:  # LAST
            out.append(buf + chunk)
    records = []
    for raw in out:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """Group, name, config, history keys/values, exit code, and table files of one offline run."""
    (log,) = run_dir.glob("run-*.wandb")
    info: dict[str, Any] = {"config": {}, "history": {}, "exit_code": None}
    for rec in read_records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            info["group"] = rec.run.run_group
            info["name"] = rec.run.display_name
        elif kind == "config":
            for u in rec.config.update:
                info["config"][u.key] = json.loads(u.value_json)
        elif kind == "history":
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                info["history"][key] = json.loads(item.value_json)
        elif kind == "exit":
            info["exit_code"] = rec.exit.exit_code
    info["tables"] = sorted((run_dir / "files" / "media" / "table").glob("*.table.json"))
    return info
