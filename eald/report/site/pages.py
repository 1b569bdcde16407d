"""The explorer's HTML pages, written by hand: the overview, a page per video and setting, and a
page per video comparing the settings. Every text that comes from data is escaped."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from html import escape
from typing import Any

from eald.report.site.data import Item
from eald.report.site.timeline import timeline_svg

WARNING = ("These pages show frames from {roots}, which is not a de-identified dataset "
           "(task=deid output): faces are NOT redacted. Do not publish them; rebuild from the "
           "de-identified root, or with --no-frames.")  # fmt: skip


def slug(video_id: str) -> str:
    """A file name for a video id; ids with other characters get a hash to stay distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", video_id)
    if safe == video_id:
        return safe
    return f"{safe}-{hashlib.sha256(video_id.encode()).hexdigest()[:8]}"


def video_href(setting: int, video_id: str) -> str:
    return f"v/{setting}/{slug(video_id)}.html"


def compare_href(video_id: str) -> str:
    return f"c/{slug(video_id)}.html"


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _window(row: dict[str, Any]) -> str:
    w = row.get("window")
    return f"{w['start_s']:.1f}–{w['end_s']:.1f} s" if w else "–"


def page(title: str, body: str, depth: int, warning: str | None) -> str:
    up = "../" * depth
    warn = f'<div class="privacy-warning" role="alert">{escape(warning)}</div>' if warning else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title>"
            f'<link rel="stylesheet" href="{up}assets/explorer.css">'
            f'<script src="{up}assets/explorer.js" defer></script></head>'
            f"<body><main>{warn}{body}</main></body></html>\n")  # fmt: skip


def _settings_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    head = ("<tr><th>#</th><th>Setting</th><th class=num>Accuracy</th><th class=num>F-score</th>"
            "<th class=num>Precision</th><th class=num>Score</th><th class=num>n</th>"
            "<th class=num>n_failed</th><th>Videos</th></tr>")  # fmt: skip
    body = []
    for i, (r, name) in enumerate(zip(rows, names, strict=True)):
        cells = []
        for key in ("accuracy", "f1", "precision", "score"):
            m, s = r.get(key), r.get(f"{key}_std")
            txt = _fmt(m) + (f" ± {s:.2f}" if s is not None else "")
            cells.append(f'<td class=num data-sort="{"" if m is None else m}">{txt}</td>')
        body.append(f"<tr><td class=num>{i}</td><td>{escape(name)}</td>{''.join(cells)}"
                    f"<td class=num>{escape(str(r['n']))}</td><td class=num>{r['n_failed']}</td>"
                    f'<td><a href="index.html?setting={i}#videos">videos</a></td></tr>')  # fmt: skip
    return (
        f'<table class="sortable" id="settings"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _video_rows(items: Sequence[Item], names: list[str]) -> str:
    out = []
    for it in items:
        r = it.row
        conf = r.get("confidence")
        out.append(
            f'<tr data-setting="{it.setting}" data-result="{it.result}" '
            f'data-video="{escape(it.video_id)}"><td data-sort="{it.setting}">{escape(names[it.setting])}</td>'
            f"<td>{escape(str(it.run.seed))}</td>"
            f'<td><a href="{video_href(it.setting, it.video_id)}">{escape(it.video_id)}</a></td>'
            f"<td>{escape(str(r.get('label')))}</td><td>{escape(str(r.get('prediction') or '–'))}</td>"
            f'<td class=num data-sort="{"" if conf is None else conf}">{_fmt(conf)}</td>'
            f'<td class="result-{it.result}">{it.result}</td><td>{escape(str(r.get("status")))}</td>'
            f'<td data-sort="{(r.get("window") or {}).get("start_s", "")}">{_window(r)}</td>'
            f'<td><a href="{compare_href(it.video_id)}">compare</a></td></tr>'
        )  # fmt: skip
    return "".join(out)


def overview(rows: list[dict[str, Any]], names: list[str], items: Sequence[Item],
             figures: list[tuple[str, str]], sources: list[str], warning: str | None,
             notes: list[str]) -> str:  # fmt: skip
    options = "".join(f'<option value="{i}">{escape(n)}</option>' for i, n in enumerate(names))
    figs = "".join(f'<figure><img src="{escape(src)}" alt="{escape(cap)}" loading="lazy">'
                   f"<figcaption>{escape(cap)}</figcaption></figure>" for src, cap in figures)  # fmt: skip
    counts = Counter(it.result for it in items)
    body = (
        "<h1>EALD results explorer</h1>"
        f'<p class="meta">{len(rows)} settings · {len(items)} video results '
        f"({counts['correct']} correct, {counts['wrong']} wrong, {counts['failed']} failed) · "
        f"runs under {escape(', '.join(sources))}</p>"
        + "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
        + "<h2>Settings</h2>" + _settings_table(rows, names)
        + (f'<h2>Figures</h2><div class="figures">{figs}</div>' if figures else "")
        + '<h2 id="videos-title">Videos</h2>'
        '<form class="filters" id="video-filters" onsubmit="return false">'
        f'<label>setting <select name="setting"><option value="">all</option>{options}</select></label>'
        '<label>result <select name="result"><option value="">all</option>'
        '<option value="correct">correct</option><option value="wrong">wrong</option>'
        '<option value="failed">failed</option></select></label>'
        '<label>video id <input name="q" type="search" placeholder="e.g. 17"></label>'
        '<span class="meta" id="video-count"></span></form>'
        '<table class="sortable" id="videos"><thead><tr><th>Setting</th><th>Seed</th><th>Video</th>'
        "<th>Label</th><th>Prediction</th><th class=num>Confidence</th><th>Result</th>"
        "<th>Status</th><th>Window</th><th>Settings</th></tr></thead>"
        f"<tbody>{_video_rows(items, names)}</tbody></table>"
    )  # fmt: skip
    return page("EALD results explorer", body, 0, warning)


def _panel(title: str, text: str | None, cls: str = "") -> str:
    shown = escape(text) if text not in (None, "") else "<em>(none)</em>"
    return f'<div class="panel {cls}"><h4>{escape(title)}</h4><pre>{shown}</pre></div>'


def _run_section(it: Item, thumbs: list[str] | None, frames_note: str | None) -> str:
    r = it.row
    out = [f"<h2>Seed {escape(str(it.run.seed))}</h2>",
           f'<p class="meta">run <code>{escape(str(it.run.path))}</code> · window {_window(r)}'
           f" · status {escape(str(r.get('status')))}</p>"]  # fmt: skip
    out += [f'<p class="note">{escape(n)}</p>' for n in it.notes]
    if it.duration_s:
        w = r.get("window")
        out.append(timeline_svg(
            it.duration_s, (w["start_s"], w["end_s"]) if w else None, it.frame_times,
            it.frame_indices, it.clips, it.video.events if it.video else [],
        ))  # fmt: skip
    if thumbs:
        figs = "".join(
            f'<figure><img src="{escape(src)}" alt="frame {i}" loading="lazy">'
            f"<figcaption>frame {i} · {t:.2f} s</figcaption></figure>"
            for src, i, t in zip(thumbs, it.frame_indices or [], it.frame_times or [], strict=True)
        )  # fmt: skip
        out.append(
            f"<h3>The {len(thumbs)} frames the model was given</h3><div class=thumbs>{figs}</div>"
        )
    elif frames_note:
        out.append(f'<p class="note">{escape(frames_note)}</p>')
    verdict = (f"{r.get('prediction') or '–'} (confidence {_fmt(r.get('confidence'))}); "
               f"true label {r.get('label')}: {it.result}")  # fmt: skip
    failure = None if r.get("status") == "ok" else f"{r.get('status')}: {r.get('error') or ''}"
    out.append('<div class="panels">'
               + _panel("MLLM response", r.get("response"))
               + _panel("NFBL text given to the model", r.get("nfbl")
                        if r.get("nfbl") is not None else "(no NFBL in this setting's modalities)")
               + _panel("Judge's raw answer", r.get("judge_raw"))
               + f'<div class="panel"><h4>Verdict</h4><p class="verdict result-{it.result}">'
               f"{escape(verdict)}</p></div>"
               + (_panel("Failure", failure, "failure") if failure else "")
               + "</div>")  # fmt: skip
    return "".join(out)


def video_page(name: str, setting: int, video_id: str, items: Sequence[Item],
               thumbs: dict[int, list[str]], frames_note: str | None, warning: str | None,
               prev_next: tuple[str | None, str | None]) -> str:  # fmt: skip
    """`thumbs`: image paths (relative to this page) by id() of the item."""
    label = items[0].row.get("label")
    prev, nxt = prev_next
    nav = ('<nav class="crumbs"><a href="../../index.html">overview</a>'
           f'<a href="../../index.html?setting={setting}#videos">this setting\'s videos</a>'
           f'<a href="../../{compare_href(video_id)}">this video in every setting</a>'
           + (f'<a href="{escape(prev)}">← previous</a>' if prev else "")
           + (f'<a href="{escape(nxt)}">next →</a>' if nxt else "") + "</nav>")  # fmt: skip
    body = (nav + f"<h1>Video {escape(video_id)}</h1>"
            f'<p class="meta">setting: {escape(name)} · true label: {escape(str(label))}</p>'
            + "".join(_run_section(it, thumbs.get(id(it)), frames_note) for it in items))  # fmt: skip
    return page(f"Video {video_id} · {name}", body, 2, warning)


def _majority(items: Sequence[Item]) -> str | None:
    preds = [it.row.get("prediction") for it in items if it.row.get("prediction")]
    if not preds:
        return None
    counts = Counter(preds).most_common()
    return counts[0][0] if len(counts) == 1 or counts[0][1] > counts[1][1] else "tie"


def compare_page(video_id: str, by_setting: dict[int, list[Item]], names: list[str],
                 warning: str | None) -> str:  # fmt: skip
    """The video across settings; the first setting is the reference, and a setting whose
    prediction (majority over its seeds) differs from the reference's is highlighted."""
    settings = sorted(by_setting)
    ref = _majority(by_setting[settings[0]])
    label = by_setting[settings[0]][0].row.get("label")
    rows = []
    for s in settings:
        its = by_setting[s]
        pred = _majority(its)
        flip = s != settings[0] and pred is not None and ref is not None and pred != ref
        preds = ", ".join(str(it.row.get("prediction") or "–") for it in its)
        confs = ", ".join(_fmt(it.row.get("confidence")) for it in its)
        resp = (its[0].row.get("response") or "")[:280]
        rows.append(
            f'<tr class="{"flip" if flip else ""}" data-setting="{s}">'
            f'<td><a href="../{video_href(s, video_id)}">{escape(names[s])}</a>'
            + (' <span class="badge">flipped</span>' if flip else "") + "</td>"
            f"<td>{escape(preds)}</td><td class=num>{escape(confs)}</td>"
            f'<td class="result-{its[0].result}">{", ".join(it.result for it in its)}</td>'
            f"<td>{escape(resp)}{'…' if len(its[0].row.get('response') or '') > 280 else ''}</td></tr>"
        )  # fmt: skip
    body = ('<nav class="crumbs"><a href="../index.html">overview</a></nav>'
            f"<h1>Video {escape(video_id)} in every setting</h1>"
            f'<p class="meta">true label: {escape(str(label))} · reference: '
            f"{escape(names[settings[0]])} (predicted {escape(str(ref))}); settings that predict "
            "otherwise are highlighted</p>"
            '<table id="compare"><thead><tr><th>Setting</th><th>Prediction (per seed)</th>'
            "<th class=num>Confidence</th><th>Result</th><th>Response (start)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")  # fmt: skip
    return page(f"Video {video_id}: settings compared", body, 1, warning)
