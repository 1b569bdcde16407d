"""Real-media tests for the demo generator and the low-level writers (no mocks)."""

from __future__ import annotations

import csv
import shutil
import wave
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from eald.data.demo import _frame_fn, generate_demo, main
from eald.data.synth import (
    espeak_speech,
    index_band_height,
    index_code_pattern,
    read_index_code,
    synthetic_voice,
    truncate_file,
    write_mp4,
    write_wav,
)
from eald.data.taxonomy import NFBL_CLASSES

VIDEOS, SECONDS, FPS, W, H = 4, 4.0, 25, 320, 240
N_FRAMES = int(SECONDS * FPS)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo"), videos=VIDEOS, seconds=SECONDS, seed=3)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} has no frame {index}")


def _packets(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(getattr(c.streams, kind)[0]) if p.size]


def _frames(path: Path, fmt: str = "rgb24") -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format=fmt) for f in c.decode(video=0)])


def _audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])


def test_layout(demo: Path) -> None:
    assert sorted(p.name for p in (demo / "videos").iterdir()) == [f"{i}.mp4" for i in range(4)]
    assert (demo / "demo.json").exists()


def test_streams_and_frame_exact_index_codes(demo: Path) -> None:
    for vid in range(VIDEOS):
        with av.open(str(demo / "videos" / f"{vid}.mp4")) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
            assert v.average_rate == FPS
            assert (v.codec_context.width, v.codec_context.height) == (W, H)
            assert a.codec_context.layout.nb_channels == 1
            assert abs(float(v.duration * v.time_base) - SECONDS) <= 1 / FPS
            assert abs(float(a.duration * a.time_base) - SECONDS) <= 1 / FPS
            assert abs(c.duration / av.time_base - SECONDS) <= 1 / FPS
            codes, times = [], []
            for f in c.decode(video=0):
                codes.append(read_index_code(f.to_ndarray(format="rgb24")))
                times.append(float(f.pts * f.time_base))
        assert codes == list(range(N_FRAMES))
        np.testing.assert_allclose(times, np.arange(N_FRAMES) / FPS, atol=1e-6)


def test_labels_balanced(demo: Path) -> None:
    rows = _rows(demo / "labels.csv")
    assert [r["video_id"] for r in rows] == [str(i) for i in range(VIDEOS)]
    assert Counter(r["label"] for r in rows) == {"positive": 2, "negative": 2}
    assert all(
        r["label"] == ("positive" if int(r["video_id"]) % 2 == 0 else "negative") for r in rows
    )


def test_nfbl_events_valid(demo: Path) -> None:
    rows = _rows(demo / "nfbl.csv")
    assert list(rows[0]) == ["video_id", "start_s", "end_s", "class_id"]
    per_video = Counter(r["video_id"] for r in rows)
    assert set(per_video) == {str(i) for i in range(VIDEOS)}
    assert all(5 <= n <= 15 for n in per_video.values())
    for r in rows:
        s, e = float(r["start_s"]), float(r["end_s"])
        assert 0.0 <= s <= e <= SECONDS
        assert r["start_s"] == f"{s:.2f}" and r["end_s"] == f"{e:.2f}"
        assert r["class_id"] in NFBL_CLASSES


def test_deterministic_and_skip(demo: Path, tmp_path: Path) -> None:
    other = generate_demo(tmp_path / "again", videos=VIDEOS, seconds=SECONDS, seed=3)
    for name in ("labels.csv", "nfbl.csv", "demo.json"):
        assert (demo / name).read_bytes() == (other / name).read_bytes()
    # Audio (native AAC) is packet-identical. The video is lossless, so whatever choices x264
    # makes, every decoded frame is exactly the generator's frame in YUV (converted here by
    # swscale on its own, one thread): pixels, hence all results, reproduce bit for bit.
    for vid in range(VIDEOS):
        rel = Path("videos") / f"{vid}.mp4"
        assert _packets(demo / rel, "audio") == _packets(other / rel, "audio")
        frame_fn = _frame_fn(vid, 3, W, H, FPS)
        for path in (demo / rel, other / rel):
            got = _frames(path, "yuv420p")
            assert len(got) == N_FRAMES
            for i, yuv in enumerate(got):
                want = av.VideoFrame.from_ndarray(frame_fn(i), format="rgb24")
                np.testing.assert_array_equal(
                    yuv, want.reformat(format="yuv420p", threads=1).to_ndarray(), f"{path}:{i}"
                )
    # Same parameters: nothing is rewritten.
    before = {p: p.stat().st_mtime_ns for p in other.rglob("*") if p.is_file()}
    assert main([str(other), "--videos", "4", "--seconds", "4", "--seed", "3"]) == 0
    assert {p: p.stat().st_mtime_ns for p in other.rglob("*") if p.is_file()} == before


def test_seed_changes_output(tmp_path: Path) -> None:
    a = generate_demo(tmp_path / "a", videos=1, seconds=1.0, seed=0)
    b = generate_demo(tmp_path / "b", videos=1, seconds=1.0, seed=1)
    assert (a / "nfbl.csv").read_bytes() != (b / "nfbl.csv").read_bytes()
    v0 = Path("videos") / "0.mp4"
    assert not np.array_equal(_frame(a / v0, 0), _frame(b / v0, 0))


def test_speakers_differ_and_start_silent(demo: Path) -> None:
    clips = [_audio(demo / "videos" / f"{vid}.mp4")[: int(SECONDS * 16000)] for vid in range(2)]
    for x in clips:
        assert np.abs(x[:4000]).max() < 0.02  # leading silence (0.25 s)
        assert np.sqrt(np.mean(x**2)) > 0.02  # but real speech energy overall
    n = min(len(x) for x in clips)
    # Distinct voices: long-term spectra differ clearly, not just sample-level noise.
    spec = [np.abs(np.fft.rfft(x[:n])) for x in clips]
    bands = [np.add.reduceat(s, np.arange(0, len(s), len(s) // 32))[:32] for s in spec]
    bands = [b / b.sum() for b in bands]
    assert np.abs(bands[0] - bands[1]).sum() > 0.1


def _code_frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 100, np.uint8)
    img[: index_band_height(W)] = index_code_pattern(i, W)
    return img


def test_write_mp4_without_audio(tmp_path: Path) -> None:
    out = write_mp4(tmp_path / "silent.mp4", _code_frame, 10, FPS, audio=None)
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["silent.mp4"]  # temp file renamed away


def test_write_mp4_variable_frame_rate(tmp_path: Path) -> None:
    tick = 1000  # pts units per nominal frame (time base 1/(fps*1000))
    pts = [i * tick + (i * i * tick) // 40 for i in range(30)]  # frames drift apart
    out = write_mp4(tmp_path / "vfr.mp4", _code_frame, 30, FPS, pts_fn=pts.__getitem__)
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.average_rate is not None and abs(float(v.average_rate) - FPS) > 1
        frames = list(c.decode(video=0))
    assert [read_index_code(f.to_ndarray(format="rgb24")) for f in frames] == list(range(30))
    got = [f.pts * f.time_base for f in frames]
    assert got == [Fraction(p, FPS * tick) for p in pts]


def test_index_code_survives_crf28_on_noise(tmp_path: Path) -> None:
    w, h = 256, 144  # narrowest allowed width: 16 px blocks
    rng = np.random.default_rng(0)
    codes = [0, 0xFFFF, 0xAAAA, 0x5555, 1, 0x8000, *rng.integers(0, 1 << 16, 14).tolist()]

    def frame(i: int) -> np.ndarray:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # worst case for the encoder
        img[: index_band_height(w)] = index_code_pattern(codes[i], w)
        return img

    out = write_mp4(tmp_path / "noise.mp4", frame, len(codes), FPS, crf=28, gop=5)
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert [read_index_code(f.to_ndarray(format="rgb24")) for f in frames] == codes
    assert [i for i, f in enumerate(frames) if f.key_frame] == [0, 5, 10, 15]  # gop=5, fixed
    with pytest.raises(ValueError):
        index_code_pattern(0, 200)  # blocks would be < 16 px


def test_audio_resampled_for_aac_and_duration_matched(tmp_path: Path) -> None:
    audio = synthetic_voice(5.0, 150.0, 22000, seed=1)  # 22 kHz is not an AAC rate; too long
    out = write_mp4(tmp_path / "a.mp4", _code_frame, 50, FPS, audio=audio, sample_rate=22000)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.rate == 48000
        assert abs(float(a.duration * a.time_base) - 2.0) <= 1 / FPS


def test_truncated_file_is_unreadable(tmp_path: Path) -> None:
    out = write_mp4(tmp_path / "t.mp4", _code_frame, 25, FPS)
    size = out.stat().st_size
    assert truncate_file(out, 0.5) == size // 2 == out.stat().st_size
    with pytest.raises(av.error.FFmpegError):
        with av.open(str(out)) as c:
            list(c.decode(video=0))


def test_write_wav_roundtrip(tmp_path: Path) -> None:
    x = synthetic_voice(0.5, 120.0, 16000, seed=2)
    write_wav(tmp_path / "x.wav", x, 16000)
    with wave.open(str(tmp_path / "x.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        y = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32767.0
    np.testing.assert_allclose(y, x, atol=1e-4)


def test_synthetic_voice_deterministic() -> None:
    a, b = synthetic_voice(1.0, 180.0, 16000, seed=5), synthetic_voice(1.0, 180.0, 16000, seed=5)
    assert a.dtype == np.float32 and a.shape == (16000,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synthetic_voice(1.0, 180.0, 16000, seed=6))
    assert 0.0 < np.abs(a).max() <= 1.0


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_speech() -> None:
    x = espeak_speech("Good morning.", "en-gb", sample_rate=16000)
    assert x is not None and x.dtype == np.float32 and 0.3 * 16000 < x.size < 3 * 16000
    assert np.abs(x).max() > 0.05
    with pytest.raises(RuntimeError, match="espeak-ng failed"):
        espeak_speech("hello", "nonexistent-voice")
