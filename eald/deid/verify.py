"""The verification gate: nothing is published before the written output was scanned for faces.

eald.deid.video writes a masked video to a temp file, then calls :func:`verify_output` on that
file. The scan decodes the output itself (what would be published, not the masker's idea of it)
and runs every configured detector at its high-recall ``verify_threshold`` on:

* every ``verify_stride``-th frame (offset ``verify_stride // 2``, so that frames between
  detection anchors are the ones looked at), and
* every frame of each segment between two detection anchors whose face counts differ, or whose
  second anchor found a face that continues no track or lost one (a face appeared, left or moved
  further than the tracker links: where interpolated or held boxes are least trustworthy).

Frames blurred whole are skipped (nothing is left to find). A detection counts as a leak unless
at least ``verify_covered`` of its area lies inside that frame's mask boxes (then it is the masked
face itself, found again as a blob). Leaks make eald.deid.video blur the frames around them whole
and write again; a face still found after ``verify_rounds`` rounds, or a scan that cannot run,
fails the video as ``failed: unverified`` and its output is never placed in the output root.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from eald.data.media import rgb24
from eald.deid.detectors import Box, Detection, Detector, detect_many


class UnverifiedError(RuntimeError):
    """The output could not be shown to be free of faces: it must not be published."""


class NoFacesError(RuntimeError):
    """Nothing was found in most detection frames of a video (deid.face.on_no_faces=fail)."""


def scan_frames(
    n: int,
    anchors: dict[int, int | None],
    whole: set[int],
    verify_stride: int,
    changed: set[int] | frozenset[int] = frozenset(),
) -> tuple[list[int], int]:
    """(the frames to scan, ascending; the number of change segments among them).

    ``anchors`` maps each detection frame to its face count (None: the detector failed there);
    ``changed`` holds the anchors where a face appeared or a tracked one was not found again.
    """
    pick = set(range(min(verify_stride // 2, n - 1), n, verify_stride)) if n else set()
    order = sorted(anchors)
    segments = 0
    for a, b in zip(order, order[1:], strict=False):
        if anchors[a] != anchors[b] or b in changed:
            segments += 1
            pick.update(range(a, b + 1))
    return sorted(i for i in pick if i not in whole and 0 <= i < n), segments


def covered_fraction(det: tuple, masks: list[Box], shape: tuple[int, int]) -> float:
    """The fraction of a detection's area inside the union of ``masks`` (pixel-exact)."""
    h, w = shape
    x0, y0 = max(0, int(det[0])), max(0, int(det[1]))
    x1, y1 = min(w, int(np.ceil(det[2]))), min(h, int(np.ceil(det[3])))
    if x1 <= x0 or y1 <= y0:
        return 1.0  # nothing of it is inside the picture
    inside = np.zeros((y1 - y0, x1 - x0), bool)
    for m in masks:
        a, b = max(m[0], x0) - x0, max(m[1], y0) - y0
        c, d = min(m[2], x1) - x0, min(m[3], y1) - y0
        if c > a and d > b:
            inside[b:d, a:c] = True
    return float(inside.mean())


def find_leaks(
    path: Any,
    frames: list[int],
    masks: list[list[Box]],
    detector: Detector,
    covered: float,
    batch: int = 1,
) -> dict[int, list[Detection]]:
    """Decode ``path`` and run ``detector`` on ``frames``, ``batch`` at a time (networks that
    batch take them in one pass): the uncovered faces, by frame."""
    want, leaks = set(frames), {}
    last = max(frames) if frames else -1
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        found = detect_many(detector, [rgb for _, rgb in pending])
        for (i, rgb), dets in zip(pending, found, strict=True):
            m = masks[i] if i < len(masks) else []
            out = [d for d in dets if covered_fraction(d, m, rgb.shape[:2]) < covered]
            want.discard(i)
            if out:
                leaks[i] = out
        pending.clear()

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(c.decode(stream)):
            if i > last:
                break
            if i in want:
                pending.append((i, rgb24(frame)))
                if len(pending) >= max(1, batch):
                    flush()
    if pending:
        flush()
    if want:  # fewer frames than written: the file is not what the masker produced
        raise UnverifiedError(f"{path}: frames {sorted(want)[:5]} could not be decoded back")
    return leaks


def verify_output(
    path: Any,
    masks: list[list[Box]],
    anchors: dict[int, int | None],
    whole: set[int],
    detector: Detector,
    conf: Any,
    changed: set[int] | frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """Scan one written output (see the module docstring); returns what was scanned and found."""
    frames, segments = scan_frames(len(masks), anchors, whole, conf.verify_stride, changed)
    try:
        leaks = find_leaks(
            path, frames, masks, detector, conf.verify_covered, getattr(conf, "batch", 1)
        )
    except UnverifiedError:
        raise
    except Exception as e:  # noqa: BLE001 - a scan that cannot run proves nothing: fail closed
        raise UnverifiedError(
            f"{path}: verification could not run ({type(e).__name__}: {e})"
        ) from e
    return {
        "scanned_frames": len(frames), "change_segments": segments,
        "leak_frames": sorted(leaks),
        "leaks": [{"frame": i, "box": [int(v) for v in d[:4]], "score": round(d.score, 3)}
                  for i, ds in sorted(leaks.items()) for d in ds][:50],
    }  # fmt: skip


def around(frames: list[int], radius: int, n: int) -> set[int]:
    """The frames within ``radius`` of any of ``frames``: what is re-masked whole."""
    return {j for i in frames for j in range(max(0, i - radius), min(n, i + radius + 1))}
