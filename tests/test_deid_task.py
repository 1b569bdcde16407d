"""task=deid and task=audit through the real runner, on demo videos with real face photographs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest

from eald.data.demo import generate_demo
from eald.data.synth import truncate_file
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory) -> Path:
    # 640x480: the demo faces are ~80 px there, the size dlib's detectors need.
    return generate_demo(tmp_path_factory.mktemp("faces") / "data", videos=3, seconds=1.5,
                         width=640, height=480)  # fmt: skip


def _rows(run: Path) -> dict[str, dict]:
    return {
        (r := json.loads(x))["video_id"]: r
        for x in (run / "predictions.jsonl").read_text().splitlines()
    }


def test_deid_then_rerun_then_audit(faces_root: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(faces_root, src)
    truncate_file(src / "videos" / "2.mp4", 0.4)  # a corrupt file: recorded, the others go on
    out = tmp_path / "deid"
    args = ["task=deid", f"dataset.root={src}", f"deid.output_root={out}",
            "deid.face.detectors=[hog]", "deid.face.min_face_px=80", "deid.workers=2"]  # fmt: skip
    r = run_cli(*args, f"hydra.run.dir={tmp_path}/r1", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "deid: 1 of 3 videos failed" in r.stderr
    rows = _rows(tmp_path / "r1")
    assert [rows[v]["status"] for v in "012"] == ["ok", "ok", "media_error"]
    assert "2.mp4" in rows["2"]["error"]
    for name in ("labels.csv", "nfbl.csv", "speakers.csv"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    for vid in "01":
        report = json.loads((out / "deid_reports" / f"{vid}.json").read_text())
        assert report["frames"] == 38 and report["audio"] == "anonymised"
        assert report["frames_with_faces"] > 0
        with av.open(str(out / "videos" / f"{vid}.mp4")) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.audio[0].codec_context.name == "aac"
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave nothing behind

    # A rerun skips finished videos (the broken one is tried again and fails again).
    r = run_cli(*args, f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path)
    m = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert m["deid"]["skipped"] == 2 and m["deid"]["processed"] == 1
    before = (out / "videos" / "0.mp4").stat().st_mtime_ns
    assert _rows(tmp_path / "r2")["0"]["skipped"] is True
    assert (out / "videos" / "0.mp4").stat().st_mtime_ns == before

    # The audit: dlib finds the faces in the originals, none after de-identification.
    r = run_cli("task=audit", f"dataset.root={src}", f"audit.deid_root={out}",
                "audit.frames_per_video=1", f"hydra.run.dir={tmp_path}/a",
                cwd=tmp_path, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "a" / "audit.json").read_text())
    s = report["summary"]
    assert s["face_original_detection_rate"] == 1.0
    assert s["face_deid_detection_rate"] == 0.0 and s["face_leak_rate"] == 0.0
    assert [e["video_id"] for e in report["errors"]] == ["2"]
    assert "| " in (tmp_path / "a" / "audit.md").read_text()


def test_deid_needs_an_output_root(faces_root: Path, tmp_path: Path):
    r = run_cli("task=deid", f"dataset.root={faces_root}", f"hydra.run.dir={tmp_path}/r",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "deid.output_root is not set" in r.stderr
    r = run_cli("task=deid", f"dataset.root={faces_root}", f"deid.output_root={faces_root}",
                f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "originals would be replaced" in r.stderr


def test_sharded_sweep_then_final_run(faces_root: Path, tmp_path: Path):
    """`-m deid.num_shards=2 'deid.shard=range(0,2)'` (a real Hydra sweep) splits the videos by
    sha256(id) mod 2 into one shared output root; a final run without shard has nothing left."""
    import hashlib

    out = tmp_path / "deid"
    common = [f"dataset.root={faces_root}", f"deid.output_root={out}", "deid.face.detectors=[hog]",
              "deid.face.min_face_px=80", "deid.workers=1"]  # fmt: skip
    r = run_cli("-m", "task=deid", "deid.num_shards=2", "deid.shard=range(0,2)", *common,
                f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    want = {k: {v for v in ("0", "1", "2") if int(hashlib.sha256(v.encode()).hexdigest(), 16) % 2 == k}
            for k in (0, 1)}  # fmt: skip
    for job in (0, 1):
        rows = _rows(tmp_path / "sweep" / str(job))
        assert set(rows) == want[job] and all(x["status"] == "ok" for x in rows.values())
    assert sorted(p.stem for p in (out / "videos").glob("*.mp4")) == ["0", "1", "2"]
    assert (out / "labels.csv").read_bytes() == (faces_root / "labels.csv").read_bytes()
    r = run_cli("task=deid", *common, f"hydra.run.dir={tmp_path}/final", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((tmp_path / "final" / "metrics.json").read_text())["deid"]
    assert (final["videos"], final["processed"], final["skipped"], final["failed"]) == (3, 0, 3, 0)


def test_shard_out_of_range_is_named(faces_root: Path, tmp_path: Path):
    r = run_cli("task=deid", f"dataset.root={faces_root}", f"deid.output_root={tmp_path}/o",
                "deid.num_shards=2", "deid.shard=2", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)  # fmt: skip
    assert r.returncode != 0 and "deid.shard=2" in r.stderr
