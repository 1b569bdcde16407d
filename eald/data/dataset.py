"""EALD on-disk layout: load, validate, and resolve a protocol split.

Layout (DESIGN.md): `videos/<id>.<ext>`, `labels.csv` (video_id,label), `nfbl.csv`
(video_id,start_s,end_s,class_id), optional `audio/<id>.wav` overriding the video's audio.

Validation collects every problem (file and row named) instead of stopping at the first, so
`task=check` can report them all at once and other tasks can turn per-video problems into failure
rows while the other videos go on.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from eald.data.media import MediaError, MediaInfo, probe
from eald.data.protocols import split_ids
from eald.data.taxonomy import LABELS, NFBL_CLASSES

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


class DatasetError(ValueError):
    """The dataset cannot be read at all (a missing csv or column)."""


@dataclass(frozen=True)
class NfblEvent:
    start_s: float
    end_s: float
    class_id: str


@dataclass(frozen=True)
class Problem:
    where: str  # "labels.csv:5" or "videos/3.mp4"
    message: str
    video_id: str | None = None
    kind: str = "invalid"  # "invalid" (annotations, layout) or "media_error" (unreadable file)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Video:
    id: str
    label: str
    path: Path | None
    audio_path: Path | None  # audio/<id>.wav override, else None (the video's own track)
    info: MediaInfo | None = None  # None when the file is missing or cannot be opened
    events: list[NfblEvent] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        return self.info.duration_s if self.info else None

    @property
    def fps(self) -> float | None:
        return self.info.fps if self.info else None

    @property
    def has_audio(self) -> bool:
        return self.audio_path is not None or bool(self.info and self.info.has_audio)


@dataclass
class Dataset:
    root: Path
    videos: dict[str, Video]
    problems: list[Problem]  # every problem, per-video ones included

    def select(
        self,
        protocol: str,
        train: list[str] | None,
        test: list[str] | None,
        split: str,
    ) -> tuple[list[str], list[Problem]]:
        """Ids of a protocol split, and a problem for each id the dataset lacks."""
        ids = split_ids(protocol, train, test, split, list(self.videos))
        missing = [
            Problem(f"protocol {protocol}", f"id {i} ({split} split) is not in labels.csv", i)
            for i in ids
            if i not in self.videos
        ]
        return ids, missing


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        # utf-8-sig: Excel's UTF-8 byte-order mark is read as what it is, not as a column name
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); save the "
            "file as UTF-8 (Latin-1 and Windows code pages are not guessed)"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = [c.strip() for c in reader.fieldnames or []]
    absent = [c for c in required if c not in cols]
    if absent:
        raise DatasetError(f"{path}: missing column(s) {absent} (found {cols})")
    # Line numbers as an editor shows them: the header is line 1.
    return [
        (n, {k.strip(): (v or "").strip() for k, v in row.items() if k})
        for n, row in enumerate(reader, start=2)
    ]


def _find_video(videos_dir: Path, vid: str) -> Path | None:
    for ext in VIDEO_EXTS:
        p = videos_dir / f"{vid}{ext}"
        if p.is_file():
            return p
    return None


def _sort_key(vid: str) -> tuple[int, int | str]:
    return (0, int(vid)) if vid.isdigit() else (1, vid)


def load_dataset(
    root: str | Path,
    videos_dir: str = "videos",
    labels_file: str = "labels.csv",
    nfbl_file: str = "nfbl.csv",
    audio_dir: str = "audio",
) -> Dataset:
    """Read and validate a dataset root. Raises DatasetError only when nothing can be read."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset.root={str(root)!r}: directory not found")
    problems: list[Problem] = []
    videos: dict[str, Video] = {}

    for line, row in _read_csv(root / labels_file, ("video_id", "label")):
        where = f"{labels_file}:{line}"
        vid, label = row["video_id"], row["label"].lower()
        if not vid:
            problems.append(Problem(where, "empty video_id"))
            continue
        if vid in videos:
            problems.append(Problem(where, f"duplicate video_id {vid!r}", vid))
            continue
        v = Video(vid, label, _find_video(root / videos_dir, vid), None)
        wav = root / audio_dir / f"{vid}.wav"
        v.audio_path = wav if wav.is_file() else None
        if label not in LABELS:
            v.problems.append(
                Problem(where, f"unknown label {row['label']!r} (expected {LABELS})", vid)
            )
        if v.path is None:
            v.problems.append(
                Problem(where, f"video file missing: {videos_dir}/{vid}.mp4 (or {VIDEO_EXTS})", vid)
            )
        else:
            try:
                v.info = probe(v.path)
            except MediaError as err:
                # Unreadable media is a per-video status, not a dataset-level failure.
                v.problems.append(
                    Problem(f"{videos_dir}/{v.path.name}", str(err), vid, kind="media_error")
                )
        videos[vid] = v

    events: dict[str, list[NfblEvent]] = defaultdict(list)
    nfbl_path = root / nfbl_file
    rows = _read_csv(nfbl_path, ("video_id", "start_s", "end_s", "class_id"))
    for line, row in rows:
        where = f"{nfbl_file}:{line}"
        vid, cls = row["video_id"], row["class_id"]
        v = videos.get(vid)
        if v is None:
            problems.append(Problem(where, f"video_id {vid!r} is not in {labels_file}", vid))
            continue
        try:
            start, end = float(row["start_s"]), float(row["end_s"])
        except ValueError:
            start = end = math.nan
        if not (math.isfinite(start) and math.isfinite(end)):  # "nan", "inf", words
            v.problems.append(Problem(where, f"start_s/end_s not finite numbers: {row}", vid))
            continue
        if cls not in NFBL_CLASSES:
            v.problems.append(
                Problem(where, f"class {cls!r} outside the NFBL taxonomy N0..N34", vid)
            )
            continue
        if end < start:
            v.problems.append(Problem(where, f"end_s {end} < start_s {start}", vid))
            continue
        dur = v.duration_s
        # Annotation tools round times; allow half a frame of slack at the end.
        slack = 0.5 / v.fps if v.fps else 0.0
        if start < 0 or (dur is not None and end > dur + slack):
            v.problems.append(
                Problem(
                    where, f"event [{start}, {end}] s outside the video (duration {dur} s)", vid
                )
            )
            continue
        events[vid].append(NfblEvent(start, end, cls))

    for vid, evs in events.items():
        videos[vid].events = sorted(evs, key=lambda e: (e.start_s, e.end_s))
    ordered = {k: videos[k] for k in sorted(videos, key=_sort_key)}
    for v in ordered.values():
        problems.extend(v.problems)
    return Dataset(root, ordered, problems)
