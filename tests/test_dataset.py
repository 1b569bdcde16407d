"""Dataset validation: every problem named by file and row, all reported at once by task=check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eald.data.dataset import DatasetError, load_dataset
from eald.data.taxonomy import NFBL_CLASSES, nfbl_name
from tests.conftest import run_cli


@pytest.fixture
def ds_copy(demo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(demo_root, root)
    return root


def _append(path: Path, line: str) -> None:
    with path.open("a") as fh:
        fh.write(line + "\n")


def test_clean_demo_loads(demo_root: Path):
    ds = load_dataset(demo_root)
    assert ds.problems == []
    assert list(ds.videos) == ["0", "1", "2", "3"]
    v = ds.videos["0"]
    assert (v.label, v.fps, v.has_audio) == ("positive", 25.0, True)
    assert v.duration_s == pytest.approx(6.0, abs=0.05)
    assert v.info.num_frames == 150 and not v.info.vfr
    assert v.events and all(e.class_id in NFBL_CLASSES for e in v.events)


def test_taxonomy():
    assert len(NFBL_CLASSES) == 35
    assert nfbl_name("N9") == "biting nails" and nfbl_name("N34") == "touching nose"
    assert nfbl_name("N32") == "unnamed (N32)"
    with pytest.raises(KeyError, match="N35"):
        nfbl_name("N35")


def test_each_validation_error_names_file_and_row(ds_copy: Path):
    labels, nfbl = ds_copy / "labels.csv", ds_copy / "nfbl.csv"
    (ds_copy / "videos" / "3.mp4").unlink()  # missing video file
    text = labels.read_text().replace("1,negative", "1,sad")  # unknown label (line 3)
    labels.write_text(text)
    _append(labels, "2,positive")  # duplicate id (line 6)
    n = len(nfbl.read_text().splitlines())
    _append(nfbl, "0,5.0,4.0,N9")  # end < start
    _append(nfbl, "0,3.0,60.0,N5")  # outside the 6-s video
    _append(nfbl, "0,1.0,2.0,N99")  # outside the taxonomy
    _append(nfbl, "42,1.0,2.0,N5")  # unknown video id
    ds = load_dataset(ds_copy)
    msgs = [str(p) for p in ds.problems]
    expect = [
        "labels.csv:5: video file missing: videos/3.mp4",
        "labels.csv:3: unknown label 'sad'",
        "labels.csv:6: duplicate video_id '2'",
        f"nfbl.csv:{n + 1}: end_s 4.0 < start_s 5.0",
        f"nfbl.csv:{n + 2}: event [3.0, 60.0] s outside the video",
        f"nfbl.csv:{n + 3}: class 'N99' outside the NFBL taxonomy",
        f"nfbl.csv:{n + 4}: video_id '42' is not in labels.csv",
    ]
    for e in expect:
        assert any(m.startswith(e) for m in msgs), (e, msgs)
    assert len(msgs) == len(expect)


def test_protocol_ids_absent_from_dataset(demo_root: Path):
    ds = load_dataset(demo_root)
    ids, missing = ds.select("part", ["0", "1"], ["2", "7", "99"], "test")
    assert ids == ["2", "7", "99"]
    assert [str(p) for p in missing] == [
        "protocol part: id 7 (test split) is not in labels.csv",
        "protocol part: id 99 (test split) is not in labels.csv",
    ]
    ids, _ = ds.select("part", ["0", "1"], ["2"], "all")
    assert ids == ["0", "1", "2"]


def test_unreadable_dataset_is_a_dataset_error(tmp_path: Path):
    with pytest.raises(DatasetError, match="directory not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "labels.csv").write_text("video,label\n0,positive\n")
    with pytest.raises(DatasetError, match=r"labels.csv: missing column\(s\) \['video_id'\]"):
        load_dataset(tmp_path)


def test_check_task_reports_every_problem_and_exits_nonzero(ds_copy: Path, tmp_path: Path):
    (ds_copy / "videos" / "3.mp4").unlink()
    _append(ds_copy / "nfbl.csv", "0,1.0,2.0,N99")
    run_dir = tmp_path / "run"
    r = run_cli(
        "task=check",
        f"dataset.root={ds_copy}",
        "protocol=part",  # none of the paper's ids 7, 10, ... exist in the demo
        "protocol.test=[0,1,2,3,99]",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    report = json.loads((run_dir / "check.json").read_text())
    probs = report["problems"]
    assert any("videos/3.mp4" in p for p in probs)
    assert any("'N99'" in p for p in probs)
    assert any("id 99 (test split)" in p for p in probs)
    assert len(probs) == 3
    assert "check failed: 3 problem(s)" in r.stderr
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    status = {row["video_id"]: row["status"] for row in rows}
    assert status == {"0": "invalid", "1": "ok", "2": "ok", "3": "invalid", "99": "missing"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["n_failed"], metrics["n"]) == (3, 0)


def test_excel_bom_latin1_and_nan_times(ds_copy: Path):
    labels, nfbl = ds_copy / "labels.csv", ds_copy / "nfbl.csv"
    # Excel's "CSV UTF-8" starts with a byte-order mark: read as the file means it
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    assert list(load_dataset(ds_copy).videos) == ["0", "1", "2", "3"]
    # a Latin-1 file: one clear line naming the file and row, no traceback
    body = nfbl.read_bytes()
    nfbl.write_bytes(body + "0,1.0,2.0,N9 (rongé)\n".encode("latin-1"))
    n = body.count(b"\n") + 1
    with pytest.raises(DatasetError, match=rf"nfbl\.csv:{n}: not UTF-8 \(byte 0xe9"):
        load_dataset(ds_copy)
    # nan / inf times are not times
    nfbl.write_bytes(body + b"0,nan,2.0,N9\n1,1.0,inf,N9\n")
    problems = [str(p) for p in load_dataset(ds_copy).problems]
    assert any(f"nfbl.csv:{n}:" in p and "not finite" in p for p in problems), problems
    assert any(f"nfbl.csv:{n + 1}:" in p and "not finite" in p for p in problems), problems
