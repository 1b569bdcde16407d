"""Sampling: windows, exact frame indices (frames carry their own index), audio clips, NFBL text."""

from __future__ import annotations

import av
import numpy as np
import pytest
from omegaconf import OmegaConf

from eald.data.dataset import NfblEvent, load_dataset
from eald.data.media import read_audio, read_frames
from eald.data.sampling import (
    Window,
    clip_spans,
    frame_indices,
    nfbl_text,
    sample_video,
    sequence_window,
)
from eald.data.synth import read_index_code, write_mp4, write_wav
from tests.conftest import REPO, sample_cfg

CFG = OmegaConf.load(REPO / "eald" / "conf" / "config.yaml")


def test_window_same_seed_same_window_and_in_range():
    for vid in ["0", "17", "273"]:
        for seed in range(5):
            w = sequence_window(vid, 420.0, 0.2, seed)
            assert w == sequence_window(vid, 420.0, 0.2, seed)
            assert 0 <= w.start_s <= 420.0 * 0.8
            assert w.duration_s == pytest.approx(84.0)
    starts = {sequence_window("5", 420.0, 0.5, s).start_s for s in range(5)}
    assert len(starts) == 5  # seeds move the window
    assert sequence_window("5", 420.0, 1.0, 3) == Window(0.0, 420.0, 1.0, None)
    with pytest.raises(ValueError, match="sequence.fraction"):
        sequence_window("5", 420.0, 0.0, 0)


def test_frame_indices_exact():
    whole = frame_indices(Window(0.0, 6.0, 1.0, None), 25.0, 150, 32)
    assert whole.tolist() == [(k * 150) // 32 for k in range(32)]
    assert whole.tolist()[:6] == [0, 4, 9, 14, 18, 23]
    # A 2-s window starting at 1.5 s: frames [37, 87) at 25 fps.
    part = frame_indices(Window(1.5, 3.5, 0.5, 0), 25.0, 150, 8)
    assert part.tolist() == [37 + (k * 50) // 8 for k in range(8)]
    # 7 minutes at 32 fps, as in EALD: Video-LLaMA's np.arange(0, n, n/32).astype(int).
    n = 7 * 60 * 32
    ref = np.arange(0, n, n / 32).astype(int).tolist()
    assert frame_indices(Window(0, 420.0, 1.0, None), 32.0, n, 32).tolist() == ref


def test_clip_spans_spread_like_imagebind():
    spans = clip_spans(Window(10.0, 20.0, 0.5, 1), 2.0, 5)
    assert spans == [(10.0, 12.0), (12.0, 14.0), (14.0, 16.0), (16.0, 18.0), (18.0, 20.0)]


@pytest.mark.parametrize("fraction,seed", [(1.0, 0), (0.5, 0), (0.5, 3), (0.2, 1), (0.2, 4)])
def test_sampled_frames_are_exactly_the_requested_indices(demo_root, fraction, seed):
    ds = load_dataset(demo_root)
    for video in ds.videos.values():
        s = sample_video(video, sample_cfg(fraction, seed, "v"))
        got = [read_index_code(f) for f in s.frames]
        assert got == s.frame_indices
        assert s.frame_times == [i / 25.0 for i in s.frame_indices]
        assert s.frame_indices[0] >= int(s.window.start_s * 25)
        assert s.frame_indices[-1] < round(s.window.end_s * 25)


def test_read_frames_any_order_repeats_and_equals_full_decode(demo_root):
    path = demo_root / "videos" / "1.mp4"
    idx = [149, 0, 77, 77, 3, 51, 50, 148]
    frames = read_frames(path, idx, 25.0)
    assert [read_index_code(f) for f in frames] == idx
    with av.open(str(path)) as c:
        full = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for k, i in enumerate(idx):
        assert np.array_equal(frames[k], full[i])
    # Forced seeking for every frame gives the same pixels.
    again = read_frames(path, idx, 25.0, seek_gap=0)
    assert np.array_equal(again, frames)


def test_audio_window_and_fbank_clips(demo_root):
    ds = load_dataset(demo_root)
    v = ds.videos["2"]
    s = sample_video(v, sample_cfg(0.5, 2, "a"))
    assert s.fbank.shape == (8, 1, 128, 204)
    assert s.frames is None and s.nfbl is None
    assert s.clip_spans[0][0] == pytest.approx(s.window.start_s)
    assert s.clip_spans[-1][1] == pytest.approx(s.window.end_s)
    wave = read_audio(v.path, 1.0, 3.0, 16000)
    assert wave.shape == (32000,) and wave.dtype == np.float32
    assert np.abs(wave).max() > 0.01  # the demo speaks
    tail = read_audio(v.path, 5.0, 7.0, 16000)  # past the end: zero padded
    assert tail.shape == (32000,) and np.all(tail[-8000:] == 0)


def _audio_frame_by_frame(path, sample_rate):
    """The whole track resampled one decoded frame at a time (the reference for read_audio's
    grouped resampling), with the track's first time."""
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        res = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        out, first = [], None
        for frame in c.decode(st):
            if first is None:
                first = float(frame.pts * st.time_base)
            out += [o.to_ndarray().reshape(-1) for o in res.resample(frame)]
        out += [o.to_ndarray().reshape(-1) for o in res.resample(None)]
    return np.concatenate(out), first


@pytest.mark.parametrize("group", [None, 1000, 5000])
def test_read_audio_equals_frame_by_frame_resampling(demo_root, monkeypatch, group):
    import eald.data.media as media

    if group is not None:  # several resampling groups per window, split inside frames' runs
        monkeypatch.setattr(media, "_AUDIO_GROUP", group)
    path = demo_root / "videos" / "3.mp4"
    ref, first = _audio_frame_by_frame(path, 16000)
    assert first == 0.0
    for a, b in [(0.0, 6.0), (0.0, 1.0), (0.25, 2.75)]:
        got = read_audio(path, a, b, 16000)
        assert np.array_equal(got, ref[int(a * 16000) : int(a * 16000) + got.size])


def test_fbank_only_when_the_backbone_takes_it(demo_root):
    v = load_dataset(demo_root).videos["2"]
    with_fbank = sample_video(v, sample_cfg(0.5, 2, "a"))
    raw = sample_video(v, sample_cfg(0.5, 2, "a"), fbank=False, decode_workers=1)
    assert raw.fbank is None and raw.summary()["fbank_shape"] is None
    assert raw.clip_spans == with_fbank.clip_spans
    for x, y in zip(raw.audio_clips, with_fbank.audio_clips, strict=True):
        assert np.array_equal(x, y)


def test_audio_override_wav_is_used(demo_root, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(demo_root, root)
    t = np.arange(6 * 16000) / 16000
    write_wav(root / "audio" / "0.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 16000)
    ds = load_dataset(root)
    v = ds.videos["0"]
    assert v.audio_path == root / "audio" / "0.wav"
    s = sample_video(v, sample_cfg(1.0, 0, "a"))
    assert s.notes == ["audio from 0.wav"]
    wave = read_audio(v.audio_path, 0.0, 1.0, 16000)
    assert np.allclose(wave, 0.5 * np.sin(2 * np.pi * 440 * t[:16000]), atol=2e-4)
    ref = sample_video(load_dataset(demo_root).videos["0"], sample_cfg(1.0, 0, "a"))
    assert not np.allclose(s.fbank, ref.fbank)


def test_nfbl_text_relative_times_and_counts():
    events = [
        NfblEvent(1.0, 2.0, "N9"),
        NfblEvent(9.0, 12.0, "N5"),  # clipped to the window end
        NfblEvent(10.5, 11.0, "N9"),
        NfblEvent(30.0, 31.0, "N16"),  # outside the window
    ]
    text = nfbl_text(events, Window(8.0, 11.0, 0.1, 0), CFG.nfbl_text)
    assert text.splitlines() == [
        "Non-facial body language annotated in this 3-second video (2 events):",
        "- 1.0s to 3.0s: covering face",
        "- 2.5s to 3.0s: biting nails",
        "Counts per behaviour: covering face x1, biting nails x1.",
    ]
    empty = nfbl_text(events, Window(20.0, 25.0, 0.1, 0), CFG.nfbl_text)
    assert empty == "No non-facial body language was annotated in this 5-second video."


def test_modalities_off_are_not_sampled(demo_root):
    v = load_dataset(demo_root).videos["0"]
    s = sample_video(v, sample_cfg(1.0, 0, "n"))
    assert s.frames is None and s.fbank is None and s.nfbl.startswith("Non-facial")


def _index_frame(i: int) -> np.ndarray:
    from eald.data.synth import index_code_pattern

    img = np.full((96, 256, 3), 90, np.uint8)
    band = index_code_pattern(i, 256)
    img[: band.shape[0]] = band
    return img


def test_bad_media_gives_per_video_status(tmp_path):
    """No audio stream, a truncated file and variable frame rate: each a clear status; the run
    goes on (the check task reports them and exits non-zero)."""
    import json

    from eald.data.synth import truncate_file
    from tests.conftest import run_cli

    root = tmp_path / "bad"
    (root / "videos").mkdir(parents=True)
    audio = 0.3 * np.sin(2 * np.pi * 200 * np.arange(32000) / 16000)
    write_mp4(root / "videos" / "0.mp4", _index_frame, 50, 25, audio=audio)  # fine
    write_mp4(root / "videos" / "1.mp4", _index_frame, 50, 25, audio=None)  # no audio
    write_mp4(root / "videos" / "2.mp4", _index_frame, 50, 25, audio=audio)
    truncate_file(root / "videos" / "2.mp4", 0.5)  # truncated
    write_mp4(root / "videos" / "3.mp4", _index_frame, 50, 25, audio=audio,
              pts_fn=lambda i: i * 1000 + (i * i * 37) % 700)  # fmt: skip
    (root / "labels.csv").write_text(
        "video_id,label\n0,positive\n1,negative\n2,positive\n3,negative\n"
    )
    (root / "nfbl.csv").write_text("video_id,start_s,end_s,class_id\n0,0.1,0.5,N9\n")
    run_dir = tmp_path / "run"
    r = run_cli("task=check", f"dataset.root={root}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert r.returncode == 2
    rows = {
        json.loads(line)["video_id"]: json.loads(line)
        for line in (run_dir / "predictions.jsonl").read_text().splitlines()
    }
    assert rows["0"]["status"] == "ok"
    assert rows["1"]["status"] == "media_error" and "no audio stream" in rows["1"]["error"]
    assert rows["2"]["status"] == "media_error" and "2.mp4" in rows["2"]["error"]
    assert rows["3"]["status"] == "media_error" and "variable frame rate" in rows["3"]["error"]
    report = json.loads((run_dir / "check.json").read_text())
    assert len(report["problems"]) == 3
    # Without audio, the video without an audio track is fine.
    r = run_cli(
        "task=check",
        f"dataset.root={root}",
        "modality=vn",
        f"hydra.run.dir={tmp_path}/r2",
        cwd=tmp_path,
    )
    rows = [json.loads(x) for x in (tmp_path / "r2" / "predictions.jsonl").read_text().splitlines()]
    assert [x["status"] for x in rows] == ["ok", "ok", "media_error", "media_error"]
