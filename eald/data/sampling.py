"""What a model sees of one video: a window, frames, audio clips as fbanks, NFBL text.

- Window: a fraction f of the duration, starting at u * D * (1 - f) with u drawn from the seed and
  the video id (sha256, so it is stable across processes and Python versions). u depends only on
  (seed, id): changing f keeps each video's relative position. f = 1 is the whole video.
- Frames: `num_frames` indices spread uniformly over the window's frames, as Video-LLaMA's
  uniform sampler does over a whole video (`np.arange(start, end, len / n).astype(int)`).
- Audio: `audio_clips` clips of `audio_clip_s` seconds spread over the window as ImageBind's
  ConstantClipsPerVideoSampler spreads them, each a 128-bin Kaldi fbank (eald.data.fbank).
- NFBL: events overlapping the window, clipped to it, as text from the `nfbl_text` template.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from eald.data.dataset import NfblEvent, Video
from eald.data.fbank import clip_starts, imagebind_melspec
from eald.data.media import MediaError, read_audio, read_frames
from eald.data.taxonomy import class_order, nfbl_name


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    fraction: float
    seed: int | None  # None when f = 1 (no randomness involved)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 6),
            "end_s": round(self.end_s, 6),
            "fraction": self.fraction,
            "seed": self.seed,
        }


def unit_uniform(seed: int, video_id: str) -> float:
    """A float in [0, 1) from (seed, video id), identical on every machine."""
    digest = hashlib.sha256(f"eald-window:{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sequence_window(video_id: str, duration_s: float, fraction: float, seed: int) -> Window:
    if not 0 < fraction <= 1:
        raise ValueError(f"sequence.fraction={fraction}: must satisfy 0 < fraction <= 1")
    if fraction == 1:
        return Window(0.0, duration_s, 1.0, None)
    length = fraction * duration_s
    start = unit_uniform(seed, video_id) * (duration_s - length)
    return Window(start, start + length, fraction, seed)


def frame_indices(window: Window, fps: float, total_frames: int, num_frames: int) -> np.ndarray:
    """Frame indices spread over the window's frames [first, first + count)."""
    first = min(int(np.floor(window.start_s * fps + 1e-6)), total_frames - 1)
    count = max(1, int(round(window.duration_s * fps)))
    count = min(count, total_frames - first)
    # Integer arithmetic: floor(k * count / n), exactly Video-LLaMA's arange(...).astype(int).
    return first + (np.arange(num_frames, dtype=np.int64) * count) // num_frames


def clip_spans(window: Window, clip_s: float, clips: int) -> list[tuple[float, float]]:
    """Absolute [start, end) times of the audio clips inside the window."""
    starts = clip_starts(window.duration_s, clip_s, clips)
    return [(window.start_s + s, window.start_s + s + clip_s) for s in starts]


def nfbl_text(events: list[NfblEvent], window: Window, tpl: Any) -> str:
    """Events overlapping [start, end) as text, times relative to the window start."""
    dur = window.duration_s
    inside = [e for e in events if e.end_s > window.start_s and e.start_s < window.end_s]
    if not inside:
        return tpl.empty.format(duration=dur, n=0)
    lines = [tpl.header.format(duration=dur, n=len(inside))]
    for e in inside[: tpl.max_events]:
        start = max(e.start_s, window.start_s) - window.start_s
        end = min(e.end_s, window.end_s) - window.start_s
        lines.append(
            tpl.event.format(start=start, end=end, name=nfbl_name(e.class_id), class_id=e.class_id)
        )
    if len(inside) > tpl.max_events:
        lines.append(f"... ({len(inside) - tpl.max_events} more events)")
    counts = Counter(e.class_id for e in inside)
    order = sorted(counts, key=lambda c: (-counts[c], class_order(c)))
    items = ", ".join(
        tpl.count_item.format(name=nfbl_name(c), class_id=c, count=counts[c]) for c in order
    )
    lines.append(tpl.counts.format(counts=items))
    return "\n".join(lines)


@dataclass
class Sample:
    """Model inputs for one video; absent modalities stay None."""

    video_id: str
    label: str
    window: Window
    frame_indices: list[int] | None = None
    frame_times: list[float] | None = None
    frames: np.ndarray | None = None  # (T, H, W, 3) uint8 RGB
    clip_spans: list[tuple[float, float]] | None = None
    fbank: torch.Tensor | None = None  # (clips, 1, mel_bins, target_length)
    audio_clips: list[np.ndarray] | None = None  # raw mono waveforms at sampling.sample_rate
    sample_rate: int = 16000
    nfbl: str | None = None
    notes: list[str] = field(default_factory=list)
    # A backbone's own preprocessing, done in stage 1's threads (Backbone.prepare), by key
    prepared: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description of what was sampled (no pixel or fbank data)."""
        out: dict[str, Any] = {"window": self.window.as_dict()}
        if self.frame_indices is not None:
            out["frame_indices"] = self.frame_indices
            out["frame_times"] = [round(t, 6) for t in self.frame_times or []]
            out["frame_shape"] = list(self.frames.shape[1:]) if self.frames is not None else None
        if self.clip_spans is not None:
            out["audio_clips"] = [[round(a, 6), round(b, 6)] for a, b in self.clip_spans]
            out["fbank_shape"] = list(self.fbank.shape) if self.fbank is not None else None
        if self.nfbl is not None:
            out["nfbl_text"] = self.nfbl
        if self.notes:
            out["notes"] = self.notes
        return out


def sample_video(
    video: Video, cfg: Any, *, fbank: bool = True, decode_workers: int | None = None
) -> Sample:
    """Sample every enabled modality of one video. Raises MediaError naming the file on bad media;
    callers turn it into that video's status.

    `fbank=False` leaves Sample.fbank None (for models that take the waveform clips);
    `decode_workers` are read_frames' threads for this video (callers that sample several videos
    at once pass 1)."""
    info = video.info
    if info is None or video.path is None:
        raise MediaError(f"video {video.id}: no readable file")
    if info.vfr and cfg.modality.video:
        raise MediaError(
            f"{video.path}: variable frame rate (average {info.average_fps:.3f} fps, nominal "
            f"{info.fps:g} fps); "
            "frame-exact sampling needs a constant rate: re-encode with ffmpeg -fps_mode cfr"
        )
    s = cfg.sampling
    window = sequence_window(video.id, info.duration_s, cfg.sequence.fraction, cfg.seed)
    sample = Sample(video.id, video.label, window)
    if cfg.modality.video:
        idx = frame_indices(window, info.fps, info.num_frames, s.num_frames)
        sample.frames = read_frames(video.path, idx, info.fps, workers=decode_workers)
        sample.frame_indices = [int(i) for i in idx]
        sample.frame_times = [int(i) / info.fps for i in idx]
    if cfg.modality.audio:
        src = video.audio_path or video.path
        if video.audio_path is None and not info.has_audio:
            raise MediaError(
                f"{video.path}: no audio stream and no audio/{video.id}.wav override "
                "(turn audio off with modality=v, vn or n)"
            )
        if video.audio_path is not None:
            sample.notes.append(f"audio from {video.audio_path.name}")
        spans = clip_spans(window, s.audio_clip_s, s.audio_clips)
        wave = read_audio(src, window.start_s, window.end_s, s.sample_rate)
        waves = []
        for a, _ in spans:
            lo = int((a - window.start_s) * s.sample_rate)
            hi = int((a - window.start_s + s.audio_clip_s) * s.sample_rate)
            waves.append(wave[lo:hi])
        sample.clip_spans = spans
        sample.audio_clips = waves
        sample.sample_rate = s.sample_rate
        if fbank:
            sample.fbank = torch.stack([
                imagebind_melspec(w, s.sample_rate, s.num_mel_bins, s.target_length,
                                  s.fbank_mean, s.fbank_std)
                for w in waves
            ])  # fmt: skip
    if cfg.modality.nfbl:
        sample.nfbl = nfbl_text(video.events, window, cfg.nfbl_text)
    return sample
