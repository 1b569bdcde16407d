"""Deterministic demo dataset: real H.264/AAC interview-like videos plus labels and NFBL events.

Layout written under ``out``::

    videos/<id>.mp4   H.264 + AAC, a real face photo moving over a textured background,
                      the frame's own index encoded at the top (see synth.index_code_pattern);
                      the video is lossless (x264 CRF 0), so decoded frames equal the generated
                      ones bit for bit whatever choices x264 makes
    labels.csv        video_id,label          ("positive" for even ids, "negative" for odd)
    nfbl.csv          video_id,start_s,end_s,class_id
    speakers.csv      video_id,speaker_id (the demo's speaker identities, for the privacy audit)
    demo.json         generation parameters, written last (completion marker)

Console entry: ``eald-demo-data OUT --videos N --seconds S --seed K``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage import data as skdata
from skimage.color import gray2rgb
from skimage.transform import resize

from eald.data.synth import (
    espeak_speech,
    index_band_height,
    index_code_pattern,
    synthetic_voice,
    write_mp4,
)
from eald.data.taxonomy import NFBL_CLASSES
from eald.io import atomic_write_text

SAMPLE_RATE = 16000
_FORMAT_VERSION = 3  # bump when the generator's output changes, to invalidate old demos


@dataclass(frozen=True)
class Speaker:
    voice: str  # espeak-ng voice name
    pitch: int  # espeak-ng pitch 0..99
    speed: int  # words per minute
    f0: float  # fallback synthetic_voice fundamental (Hz)
    photo: str  # "astronaut" | "camera"


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("en-us", 35, 150, 110.0, "camera"),
    Speaker("en-us+f3", 65, 160, 210.0, "astronaut"),
    Speaker("en-gb-scotland", 25, 140, 95.0, "camera"),
    Speaker("en-gb+f4", 75, 165, 235.0, "astronaut"),
)

_SENTENCES = {
    "positive": (
        "I am really happy with how I played today.",
        "The crowd was amazing, thank you all for the support.",
        "My serve was working well from the very first game.",
        "I felt confident after winning the first set.",
        "We prepared a lot for this match and it paid off.",
    ),
    "negative": (
        "It is disappointing, I made too many mistakes.",
        "He played better than me on the important points.",
        "I could not find my rhythm in the second set.",
        "Honestly I was nervous, and it showed on the court.",
        "I need to look at what went wrong and come back stronger.",
    ),
    "neutral": (
        "The conditions were difficult with the wind today.",
        "Next week we travel to the next tournament.",
        "My coach and I will talk about the match tomorrow.",
        "It was a long match, both of us were tired at the end.",
    ),
}

# NFBL class prior loosely following the paper's Fig. 4: N9 (biting nails) and N5 (covering
# face) dominate, a handful of self-touch classes follow, the rest form a long tail.
_BASE_WEIGHTS = {f"N{k}": 1.0 for k in range(35)}
_BASE_WEIGHTS.update(
    {"N9": 14.0, "N5": 11.0, "N3": 5.0, "N7": 4.0, "N22": 4.0, "N16": 3.5, "N31": 3.0,
     "N12": 3.0, "N10": 2.5, "N19": 2.5, "N34": 2.0, "N32": 0.4, "N33": 0.4}
)  # fmt: skip
_SKEW = {  # label-dependent multipliers: losers cover faces / bite nails / fold arms more
    "negative": {"N5": 1.6, "N9": 1.5, "N16": 2.0, "N28": 1.5},
    "positive": {"N27": 2.0, "N31": 1.6, "N24": 1.8, "N20": 1.5},
}
assert set(_BASE_WEIGHTS) == set(NFBL_CLASSES)


def label_of(video_id: int) -> str:
    """Balanced labels: even ids positive, odd ids negative."""
    return "positive" if video_id % 2 == 0 else "negative"


def _face_photo(name: str, target_h: int) -> np.ndarray:
    # Crops of real photographs bundled with scikit-image (no download needed).
    if name == "astronaut":
        crop = skdata.astronaut()[0:220, 140:360]
    else:
        crop = gray2rgb(skdata.camera()[40:200, 170:330])
    target_w = max(2, round(crop.shape[1] * target_h / crop.shape[0]))
    out = resize(crop, (target_h, target_w), anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Smooth two-colour gradient + low-frequency texture: cheap to encode, not flat.
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(40, 200, size=(2, 3)).astype(np.float32)
    g = ((x / width + y / height) / 2.0)[..., None]
    img = c0 * (1 - g) + c1 * g
    fx, fy = rng.uniform(0.02, 0.08, size=2)
    tex = 14.0 * np.sin(fx * x + rng.uniform(0, 6.3)) * np.cos(fy * y + rng.uniform(0, 6.3))
    img += tex[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _frame_fn(
    vid: int, seed: int, width: int, height: int, fps: int
) -> Callable[[int], np.ndarray]:
    rng = np.random.default_rng([seed, vid, 1])
    bg = _background(rng, width, height)
    band_h = index_band_height(width)
    face = _face_photo(SPEAKERS[vid % len(SPEAKERS)].photo, max(16, round(0.4 * height)))
    fh, fw = face.shape[:2]
    y_lo, y_hi = band_h + 4, height - fh  # never overlap the index band
    x_lo, x_hi = 0, width - fw
    px, py = rng.uniform(5.0, 9.0), rng.uniform(3.0, 6.0)  # motion periods (s)
    phx, phy = rng.uniform(0, 2 * np.pi, size=2)

    def frame(i: int) -> np.ndarray:
        t = i / fps
        # Smooth Lissajous path, integer pixel positions.
        x = x_lo + round((x_hi - x_lo) * (0.5 + 0.45 * np.sin(2 * np.pi * t / px + phx)))
        y = y_lo + round((y_hi - y_lo) * (0.5 + 0.45 * np.sin(2 * np.pi * t / py + phy)))
        img = bg.copy()
        img[y : y + fh, x : x + fw] = face
        img[:band_h] = index_code_pattern(i, width)
        return img

    return frame


def _speech(vid: int, seed: int, seconds: float, use_espeak: bool) -> np.ndarray:
    """Seeded interview answers in the speaker's voice, tiled with pauses to ``seconds``."""
    rng = np.random.default_rng([seed, vid, 2])
    spk = SPEAKERS[vid % len(SPEAKERS)]
    n = int(round(seconds * SAMPLE_RATE))
    pool = list(_SENTENCES[label_of(vid)]) + list(_SENTENCES["neutral"])
    picks = rng.choice(len(pool), size=int(rng.integers(2, 5)), replace=False)
    text = " ".join(pool[int(k)] for k in picks)
    speech = None
    if use_espeak:
        speech = espeak_speech(text, spk.voice, SAMPLE_RATE, spk.speed, spk.pitch)
    if speech is None:  # espeak-ng absent: formant-synthesised stand-in of similar length
        speech = synthetic_voice(len(text) / 14.0, spk.f0, SAMPLE_RATE, seed * 1000 + vid)
    speech = 0.7 * speech / max(float(np.abs(speech).max()), 1e-6)
    parts = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]  # short silence at the start
    total = parts[0].size
    while total < n:
        parts.append(speech.astype(np.float32))
        parts.append(np.zeros(int(rng.uniform(0.6, 1.5) * SAMPLE_RATE), np.float32))
        total += parts[-2].size + parts[-1].size
    return np.concatenate(parts)[:n]


def _events(vid: int, seed: int, seconds: float) -> list[tuple[float, float, str]]:
    rng = np.random.default_rng([seed, vid, 3])
    ids = list(_BASE_WEIGHTS)
    skew = _SKEW[label_of(vid)]
    w = np.array([_BASE_WEIGHTS[c] * skew.get(c, 1.0) for c in ids])
    rows = []
    for _ in range(int(rng.integers(5, 16))):
        dur = rng.uniform(min(0.3, seconds), min(6.0, seconds))  # also valid for tiny demos
        start = round(float(rng.uniform(0.0, seconds - dur)), 2)
        end = min(round(start + dur, 2), round(seconds, 2))
        rows.append((start, max(end, start), ids[int(rng.choice(len(ids), p=w / w.sum()))]))
    rows.sort(key=lambda r: (r[0], r[1], int(r[2][1:])))
    return rows


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def generate_demo(
    out: Path,
    videos: int = 8,
    seconds: float = 20.0,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
) -> Path:
    """Generate (or reuse) the demo dataset under ``out``; returns ``out``.

    Regeneration is skipped when ``out/demo.json`` records identical parameters.
    ``width`` must be >= 256 so each of the 16 index-code blocks is >= 16 px wide.
    """
    out = Path(out)
    if videos < 1 or seconds <= 0:
        raise ValueError("need videos >= 1 and seconds > 0")
    use_espeak = espeak_speech("test", "en-us") is not None
    params = {
        "videos": videos, "seconds": float(seconds), "seed": seed, "width": width,
        "height": height, "fps": fps, "tts": "espeak-ng" if use_espeak else "synthetic",
        "version": _FORMAT_VERSION,
    }  # fmt: skip
    meta = out / "demo.json"
    if (out / "labels.csv").exists() and meta.exists():
        try:
            same = json.loads(meta.read_text()) == params
        except (OSError, ValueError):
            same = False
        if same and all((out / "videos" / f"{i}.mp4").exists() for i in range(videos)):
            return out
    (out / "videos").mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)  # a crash below must not leave a "complete" marker

    n_frames = int(round(seconds * fps))

    def one(vid: int) -> None:
        write_mp4(
            out / "videos" / f"{vid}.mp4",
            _frame_fn(vid, seed, width, height, fps),
            n_frames,
            fps,
            audio=_speech(vid, seed, n_frames / fps, use_espeak),
            sample_rate=SAMPLE_RATE,
            gop=2 * fps,  # 2 s GOPs: realistic, and keeps seeks cheap
            # Lossless: at CRF 23 the bitstream (and so the decoded pixels) of the same input now
            # and then differed between runs on one machine (x264 on one thread; ~1 file in 50
            # under load; cause not found). Lossless H.264 decodes to exactly the frames made
            # here, so the demo, and every result computed from it, reproduces bit for bit.
            crf=0,
        )

    # Videos are independent and x264 runs single-threaded per file, so a thread per core
    # gives parallelism (PyAV releases the GIL while encoding) without losing determinism.
    with ThreadPoolExecutor(max_workers=max(1, min(videos, os.cpu_count() or 1))) as pool:
        list(pool.map(one, range(videos)))

    atomic_write_text(
        out / "labels.csv",
        _csv_text(["video_id", "label"], [(i, label_of(i)) for i in range(videos)]),
    )
    rows = [
        (i, f"{s:.2f}", f"{e:.2f}", c)
        for i in range(videos)
        for s, e, c in _events(i, seed, n_frames / fps)
    ]
    atomic_write_text(
        out / "nfbl.csv", _csv_text(["video_id", "start_s", "end_s", "class_id"], rows)
    )
    # Speaker identities are ground truth for the voice privacy audit (task=audit).
    atomic_write_text(
        out / "speakers.csv",
        _csv_text(
            ["video_id", "speaker_id"], [(i, f"spk{i % len(SPEAKERS)}") for i in range(videos)]
        ),
    )
    atomic_write_text(meta, json.dumps(params, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``eald-demo-data OUT --videos N --seconds S --seed K``."""
    p = argparse.ArgumentParser(prog="eald-demo-data", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--videos", type=int, default=8, help="number of videos (default 8)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per video (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    out = generate_demo(a.out, videos=a.videos, seconds=a.seconds, seed=a.seed)
    print(f"demo data ready in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
