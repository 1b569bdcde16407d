"""Privacy audit on real demo videos: a leaky copy, and a blurred + McAdams-anonymised variant.

Everything is real: H.264/AAC demo videos with photographed faces and espeak-ng voices, dlib's
CNN detector and ResNet embeddings, Resemblyzer. dlib's CNN (dlib-bin has no BLAS) costs 1-1.4 s
per 256x480 frame on this CPU, so the demo is portrait (the face stays ~80 px, the smallest the
CNN finds without upsampling, at 40% of a 640x480 frame's pixels): six 2 s videos, one frame each.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from eald.data.demo import SAMPLE_RATE, generate_demo
from eald.data.media import probe, read_audio
from eald.data.synth import truncate_file, write_mp4, write_wav
from eald.deid.audit import AuditConf, _voices, audit, equal_error_rate
from eald.deid.voice import mcadams

N_VIDEOS = 6  # speakers are id % 4: videos 0/4 and 1/5 share a speaker (same-speaker trials)
FPV = 1  # frames per video: 6 + 6 + 4 CNN runs in all (the originals' are cached across audits)


class RecordingLogger:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.tables: dict[str, list[dict[str, Any]]] = {}

    def log_config(self, config: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update(metrics)

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.tables[name] = list(rows)

    def finish(self, exit_code: int = 0) -> None:
        pass


def _blur_video(src: Path, dst: Path) -> None:
    """Re-encode with every frame blurred far past recognition (a face becomes ~5 px wide, then
    smooth); no audio track: the anonymised voice goes to audio/<id>.wav (the override)."""
    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w = frames[0].shape[:2]

    def blurred(i: int) -> np.ndarray:  # down 16x and back: as strong as a huge Gaussian, cheaper
        small = cv2.resize(frames[i], (w // 16, h // 16), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    write_mp4(dst, blurred, len(frames), round(probe(src).fps))


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("audit")
    orig = generate_demo(tmp / "orig", videos=N_VIDEOS, seconds=2.0, width=256, height=480)
    if not (orig / "speakers.csv").exists():  # older generators did not write it
        with (orig / "speakers.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["video_id", "speaker_id"])
            w.writerows([(i, f"spk{i % 4}") for i in range(N_VIDEOS)])
    copy = tmp / "copy"
    shutil.copytree(orig, copy)
    blur = tmp / "blur"
    (blur / "videos").mkdir(parents=True)
    for name in ("labels.csv", "nfbl.csv"):
        shutil.copy(orig / name, blur / name)
    for i in range(N_VIDEOS - 1):  # the last video is missing from the blurred root
        src = orig / "videos" / f"{i}.mp4"
        _blur_video(src, blur / "videos" / f"{i}.mp4")
        x = read_audio(src, 0.0, probe(src).duration_s, SAMPLE_RATE)
        y = 0.7 * mcadams(x.astype(np.float64), SAMPLE_RATE, lam=0.8)  # peak 1: leave headroom
        write_wav(blur / "audio" / f"{i}.wav", y, SAMPLE_RATE)
    truncate_file(blur / "videos" / f"{N_VIDEOS - 2}.mp4", 0.3)  # and one is unreadable
    return {"orig": orig, "copy": copy, "blur": blur, "tmp": tmp}


@pytest.fixture(scope="module")
def copy_report(roots) -> tuple[dict[str, Any], RecordingLogger, Path]:
    out, log = roots["tmp"] / "out_copy", RecordingLogger()
    conf = AuditConf(frames_per_video=FPV, out_dir=str(out))
    return audit(roots["orig"], roots["copy"], conf, logger=log), log, out


@pytest.fixture(scope="module")
def blur_report(roots) -> dict[str, Any]:
    # As the Hydra runner passes it: a DictConfig with AuditConf as its schema.
    conf = OmegaConf.structured(AuditConf(frames_per_video=FPV, out_dir=str(roots["tmp"] / "b")))
    return audit(roots["orig"], roots["blur"], conf)


def test_copy_leaks_every_face(copy_report) -> None:
    rep, _, _ = copy_report
    s = rep["summary"]
    assert rep["errors"] == []
    assert s["face_videos"] == N_VIDEOS and s["face_frames"] == FPV * N_VIDEOS
    assert s["face_original_detection_rate"] >= 0.9
    assert s["face_deid_detection_rate"] == pytest.approx(s["face_original_detection_rate"])
    assert s["face_leak_rate"] >= 0.9
    for row in rep["faces"]["per_video"]:
        assert all(d is None or d < 1e-6 for d in row["min_distance"])  # same pixels


def test_copy_voices_identical_and_eer(copy_report) -> None:
    v = copy_report[0]["voices"]
    assert v["same_video"]["n"] == N_VIDEOS and v["skipped"] == []
    assert v["same_video"]["min"] > 0.99  # the same track: the same embedding
    assert v["trials"] == {"original": 15, "anonymised": 30, "original_same": 2,
                           "anonymised_same": 4}  # fmt: skip
    for key in ("eer_original", "eer_anonymised"):
        assert isinstance(v[key], float) and 0.0 <= v[key] <= 0.5
    # A copy is no anonymisation: verification is exactly as easy as on the originals.
    assert v["eer_anonymised"] <= v["eer_original"] + 1e-9
    assert len(v["same_speaker"]["values"]) == 2 and len(v["different_speaker"]["values"]) == 13


def test_outputs_and_logger(copy_report) -> None:
    rep, log, out = copy_report
    on_disk = json.loads((out / "audit.json").read_text())
    assert on_disk["summary"] == rep["summary"]
    md = (out / "audit.md").read_text()
    assert "| video | frames | original detection | de-identified detection | leak rate |" in md
    assert "| comparison | trials | mean cosine similarity | EER |" in md
    assert "rough" in md
    assert log.metrics["audit/face_leak_rate"] == rep["summary"]["face_leak_rate"]
    assert "audit/voice_eer_original" in log.metrics
    assert [r["video_id"] for r in log.tables["audit_faces"]] == [str(i) for i in range(N_VIDEOS)]
    assert len(log.tables["audit_voices"]) == N_VIDEOS


def test_blurred_root_hides_faces_and_reports_bad_videos(blur_report, copy_report) -> None:
    rep, s = blur_report, blur_report["summary"]
    bad = {e["video_id"]: e for e in rep["errors"]}
    assert set(bad) == {str(N_VIDEOS - 2), str(N_VIDEOS - 1)}
    assert bad[str(N_VIDEOS - 1)]["file"].endswith(f"videos/{N_VIDEOS - 1}.mp4")  # missing
    assert f"videos/{N_VIDEOS - 2}.mp4" in bad[str(N_VIDEOS - 2)]["file"]  # truncated
    assert s["face_videos"] == N_VIDEOS - 2  # the others went on
    assert s["face_original_detection_rate"] >= 0.9
    assert s["face_deid_detection_rate"] == 0.0 and s["face_leak_rate"] == 0.0
    # Voices: audio/<id>.wav overrides; the truncated video's wav still counts.
    v = rep["voices"]
    assert v["same_video"]["n"] == N_VIDEOS - 1
    assert v["same_video"]["mean"] < copy_report[0]["voices"]["same_video"]["mean"]
    assert isinstance(v["eer_anonymised"], float)
    md = (Path(rep["conf"]["out_dir"]) / "audit.md").read_text()
    assert f"videos/{N_VIDEOS - 1}.mp4" in md


def test_equal_error_rate_interpolates() -> None:
    same = [True, True, False, True, False, False]
    assert equal_error_rate(same, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]) == pytest.approx(1 / 3)
    assert equal_error_rate(same, [0.9, 0.8, 0.1, 0.7, 0.2, 0.1]) == 0.0
    # FNR - FPR goes 1/3 -> -1/6 between two ROC points: 2/3 of the way, FPR = FNR = 1/3.
    tt, ff = [True] * 3, [False] * 2
    assert equal_error_rate(tt + ff, [0.9, 0.8, 0.4, 0.6, 0.1]) == pytest.approx(1 / 3)
    assert equal_error_rate([True, True], [0.1, 0.2]) is None


def test_without_speaker_labels_eers_are_skipped() -> None:
    rng = np.random.default_rng(0)
    e = {str(i): (x := rng.normal(size=256)) / np.linalg.norm(x) for i in range(3)}
    v = _voices(e, e, None)
    assert v["eer_original"] is None and v["eer_anonymised"] is None
    assert v["same_video"]["mean"] == pytest.approx(1.0) and "speakers.csv" in v["notes"][0]
