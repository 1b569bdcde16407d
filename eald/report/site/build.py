"""`eald-report ... --html DIR`: a static site that opens from disk, offline (every asset is
local). The overview (settings, figures, a sortable and filterable table of every video result),
a page per video and setting (timeline, the frames the model was given, its response, the NFBL
text, the judge's answer and verdict, the failure), and a page per video comparing the settings.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from eald.data.media import MediaError, file_fingerprint
from eald.report.collect import Run, Setting
from eald.report.site import pages
from eald.report.site.data import Datasets, Item, is_deid_output, items_of
from eald.report.site.thumbs import thumb_key, thumbnails

FIGURES = (("sequence_curve", "Accuracy vs sequence length (mean ± std over seeds)"),
           ("confusion", "Confusion matrices, summed over seeds"),
           ("confidence_hist", "Judge confidence by true class"),
           ("nfbl_distribution", "NFBL classes in the dataset"))  # fmt: skip


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _thumbs(
    items: list[Item], out: Path, cache: Path, stats: dict[str, int]
) -> dict[int, list[str]]:
    """Thumbnail paths relative to a video page, by id() of the item; decoding failures become
    notes on the item (the page shows them, the build goes on). Settings share a video's frames
    whenever their windows agree: each file is fingerprinted once, and each set decoded, checked
    in the cache and copied once."""
    done: dict[str, list[str] | str] = {}  # key -> page paths, or the decoding error
    prints: dict[Path, str] = {}
    by_item: dict[int, list[str]] = {}
    for it in items:
        v = it.video
        if not it.frame_indices or v is None or v.path is None or v.info is None:
            continue
        if v.path not in prints:
            prints[v.path] = file_fingerprint(v.path)
        key = thumb_key(prints[v.path], it.frame_indices)
        if key not in done:
            try:
                key, files, decoded = thumbnails(v, it.frame_indices, cache, prints[v.path])
            except MediaError as err:
                done[key] = f"frames could not be decoded: {err}"
            else:
                stats["thumbnails_decoded"] += decoded
                dst = out / "frames" / key
                dst.mkdir(parents=True, exist_ok=True)
                for f in files:
                    shutil.copyfile(f, dst / f.name)
                done[key] = [f"../../frames/{key}/{f.name}" for f in files]
                stats["thumbnail_sets"] += 1
        got = done[key]
        if isinstance(got, str):
            it.notes.append(got)
        else:
            by_item[id(it)] = got
    return by_item


def build_site(out: Path, groups: dict[Setting, list[Run]], rows: list[dict[str, Any]],
               names: list[str], plots: Path | None, frames: bool, thumb_cache: Path,
               sources: list[str]) -> dict[str, Any]:  # fmt: skip
    """Writes the site into `out` (an empty directory); returns counts and timings."""
    t0 = time.perf_counter()
    items = items_of(groups, Datasets())
    roots = sorted({str(it.root) for it in items if it.root is not None})
    unredacted = [r for r in roots if not is_deid_output(Path(r))]
    warning = pages.WARNING.format(roots=", ".join(unredacted)) if frames and unredacted else None
    notes = [] if frames else ["Frames are left out (--no-frames)."]
    assets = resources.files("eald.report.site").joinpath("assets")
    (out / "assets").mkdir(parents=True, exist_ok=True)
    for name in ("explorer.css", "explorer.js"):
        (out / "assets" / name).write_bytes(assets.joinpath(name).read_bytes())
    figures = []
    for stem, caption in FIGURES:
        if plots is not None and (plots / f"{stem}.png").is_file():
            (out / "plots").mkdir(exist_ok=True)
            shutil.copyfile(plots / f"{stem}.png", out / "plots" / f"{stem}.png")
            figures.append((f"plots/{stem}.png", caption))
    stats = {"thumbnail_sets": 0, "thumbnails_decoded": 0}
    t1 = time.perf_counter()
    thumbs = _thumbs(items, out, thumb_cache, stats) if frames else {}
    t_thumbs = time.perf_counter() - t1
    frames_note = None if frames else "Frames left out (--no-frames)."

    by_page: dict[tuple[int, str], list[Item]] = {}
    for it in items:
        by_page.setdefault((it.setting, it.video_id), []).append(it)
    order: dict[int, list[str]] = {}
    for s, vid in by_page:
        order.setdefault(s, []).append(vid)
    position = {(s, vid): k for s, vids in order.items() for k, vid in enumerate(vids)}
    for (s, vid), its in by_page.items():
        vids, k = order[s], position[(s, vid)]
        prev = f"{pages.slug(vids[k - 1])}.html" if k > 0 else None
        nxt = f"{pages.slug(vids[k + 1])}.html" if k + 1 < len(vids) else None
        html = pages.video_page(names[s], s, vid, its, thumbs, frames_note, warning, (prev, nxt))
        _write(out / pages.video_href(s, vid), html)
    by_video: dict[str, dict[int, list[Item]]] = {}
    for (s, vid), its in by_page.items():
        by_video.setdefault(vid, {})[s] = its
    for vid, by_setting in by_video.items():
        _write(out / pages.compare_href(vid), pages.compare_page(vid, by_setting, names, warning))
    _write(out / "index.html",
           pages.overview(rows, names, items, figures, sources, warning, notes))  # fmt: skip
    return {"items": len(items), "video_pages": len(by_page), "compare_pages": len(by_video),
            "thumbnail_sets": stats["thumbnail_sets"],
            "thumbnails_decoded": stats["thumbnails_decoded"], "unredacted_roots": unredacted,
            "seconds_thumbnails": round(t_thumbs, 3),
            "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
