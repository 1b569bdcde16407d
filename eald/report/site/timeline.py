"""A video's whole timeline as inline SVG: the sampled window, the sampled frames, the audio clips
and the NFBL events (coloured bars in lanes, class id and name), with hover text (<title>) giving
the times. No script: it renders as the page loads, and prints."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from eald.data.dataset import NfblEvent
from eald.data.taxonomy import nfbl_name

WIDTH, LABEL_W, ROW_H, GAP = 1000.0, 70.0, 16.0, 6.0
# 12 colours that stay apart on white and for common colour blindness (Tableau 10 + 2)
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#1b9e77", "#7570b3")  # fmt: skip


def class_colour(class_id: str) -> str:
    digits = "".join(ch for ch in class_id if ch.isdigit())
    return PALETTE[int(digits) % len(PALETTE)] if digits else PALETTE[-1]


def _lanes(events: Sequence[NfblEvent]) -> list[int]:
    """Greedy lane per event (in start order) so that bars in a lane never overlap."""
    ends: list[float] = []
    lanes = []
    for e in events:
        lane = next((i for i, end in enumerate(ends) if end <= e.start_s), len(ends))
        if lane == len(ends):
            ends.append(e.end_s)
        else:
            ends[lane] = e.end_s
        lanes.append(lane)
    return lanes


def _ticks(duration: float) -> list[float]:
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800) if duration / s <= 10)
    return [k * step for k in range(int(duration // step) + 1)]


def timeline_svg(
    duration: float,
    window: tuple[float, float] | None,
    frame_times: Sequence[float] | None,
    frame_indices: Sequence[int] | None,
    clips: Sequence[tuple[float, float]] | None,
    events: Sequence[NfblEvent],
) -> str:
    """The SVG element (class "timeline"); times in seconds from the video's start."""
    span = WIDTH - LABEL_W - 24  # room for the last tick's label

    def x(t: float) -> float:
        return LABEL_W + span * max(0.0, min(t, duration)) / duration

    events = sorted(events, key=lambda e: (e.start_s, e.end_s))
    lanes = _lanes(events)
    n_lanes = max(lanes, default=-1) + 1
    parts: list[str] = []
    y = 4.0

    def label(text: str, yy: float) -> None:
        parts.append(f'<text class="lane" x="0" y="{yy + ROW_H - 4:.1f}">{escape(text)}</text>')

    label("window", y)
    if window is not None:
        a, b = window
        parts.append(f'<rect class="window" x="{x(a):.1f}" y="{y:.1f}" width="{max(x(b) - x(a), 1):.1f}" '
                     f'height="{ROW_H}"><title>sampled window {a:.2f}–{b:.2f} s '
                     f"({b - a:.2f} s)</title></rect>")  # fmt: skip
    y += ROW_H + GAP
    label("frames", y)
    for k, t in enumerate(frame_times or []):
        idx = f"frame {frame_indices[k]}" if frame_indices else f"frame {k}"
        parts.append(f'<line class="frame" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y:.1f}" '
                     f'y2="{y + ROW_H:.1f}"><title>{idx} at {t:.2f} s</title></line>')  # fmt: skip
    y += ROW_H + GAP
    label("audio", y)
    for k, (a, b) in enumerate(clips or []):
        parts.append(f'<rect class="clip" x="{x(a):.1f}" y="{y + 2:.1f}" width="{max(x(b) - x(a), 1):.1f}" '
                     f'height="{ROW_H - 4}"><title>audio clip {k + 1}: {a:.2f}–{b:.2f} s</title></rect>')  # fmt: skip
    y += ROW_H + GAP
    label("NFBL", y)
    if not events:
        parts.append(
            f'<text class="none" x="{LABEL_W}" y="{y + ROW_H - 4:.1f}">no NFBL events</text>'
        )
    for e, lane in zip(events, lanes, strict=True):
        yy = y + lane * (ROW_H + 2)
        w = max(x(e.end_s) - x(e.start_s), 1.5)
        name = nfbl_name(e.class_id)
        text = f"{e.class_id} {name}"
        # the label inside the bar when it fits (about 6 px a character at this size)
        shown = (
            text if len(text) * 6 <= w - 4 else (e.class_id if len(e.class_id) * 6 <= w - 4 else "")
        )
        parts.append(
            f'<g class="nfbl" data-class="{escape(e.class_id)}"><rect x="{x(e.start_s):.1f}" '
            f'y="{yy:.1f}" width="{w:.1f}" height="{ROW_H}" fill="{class_colour(e.class_id)}"/>'
            + (f'<text x="{x(e.start_s) + 3:.1f}" y="{yy + ROW_H - 4:.1f}">{escape(shown)}</text>'
               if shown else "")
            + f"<title>{escape(text)}: {e.start_s:.2f}–{e.end_s:.2f} s</title></g>"
        )  # fmt: skip
    y += max(n_lanes, 1) * (ROW_H + 2) + GAP
    for t in _ticks(duration):
        parts.append(f'<line class="tick" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y:.1f}" y2="{y + 4:.1f}"/>'
                     f'<text class="tick" x="{x(t):.1f}" y="{y + 15:.1f}">{t:g} s</text>')  # fmt: skip
    height = y + 20
    return (f'<svg class="timeline" viewBox="0 0 {WIDTH:.0f} {height:.0f}" role="img" '
            f'aria-label="timeline of the whole video, {duration:.1f} s">' + "".join(parts) + "</svg>")  # fmt: skip
