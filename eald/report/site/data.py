"""What the explorer shows of one video in one run: its row of predictions.jsonl, the video in the
dataset root the run read, and where the run sampled it.

Positions are recomputed with the sampler's own functions (eald.data.sampling) from the run's
config: a cached answer's row does not carry them. The recomputed window must equal the one the
row recorded; if it does not (the dataset changed since the run), positions are left out and the
page says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eald.data.dataset import Dataset, DatasetError, Video, load_dataset
from eald.data.sampling import clip_spans, frame_indices, sequence_window
from eald.report.collect import Run, Setting, lookup


@dataclass
class Item:
    """One video of one run (a setting and a seed)."""

    setting: int  # index into the report's settings (rows / names)
    run: Run
    row: dict[str, Any]
    root: Path | None  # the dataset root the run read
    video: Video | None  # None: that root or video cannot be read now
    frame_indices: list[int] | None = None
    frame_times: list[float] | None = None
    clips: list[tuple[float, float]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def video_id(self) -> str:
        return str(self.row["video_id"])

    @property
    def result(self) -> str:
        """correct / wrong for scored videos, failed otherwise."""
        if self.row.get("status") != "ok" or self.row.get("prediction") is None:
            return "failed"
        return "correct" if self.row["prediction"] == self.row.get("label") else "wrong"

    @property
    def duration_s(self) -> float | None:
        return self.video.duration_s if self.video is not None else None


def _get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    got = lookup(cfg, dotted)
    return default if got is None else got


def is_deid_output(root: Path | None) -> bool:
    """A task=deid output root (it holds deid_reports/, written only by de-identification)."""
    return root is not None and (root / "deid_reports").is_dir()


class Datasets:
    """Dataset roots, each read once (probing every video file)."""

    def __init__(self) -> None:
        self._by_root: dict[Path, Dataset | None] = {}
        self.errors: dict[Path, str] = {}

    def get(self, root: Path) -> Dataset | None:
        if root not in self._by_root:
            try:
                self._by_root[root] = load_dataset(root)
            except DatasetError as err:
                self._by_root[root] = None
                self.errors[root] = str(err)
        return self._by_root[root]


def _positions(item: Item, cfg: dict[str, Any]) -> None:
    v, row = item.video, item.row
    if v is None or v.info is None or not row.get("window"):
        return
    fraction, seed = _get(cfg, "sequence.fraction", 1.0), _get(cfg, "seed", 0)
    window = sequence_window(v.id, v.info.duration_s, float(fraction), int(seed))
    got = row["window"]
    if abs(window.start_s - got["start_s"]) > 1e-5 or abs(window.end_s - got["end_s"]) > 1e-5:
        item.notes.append("the video now differs from the one the run sampled (another window): "
                          "sampled positions are not shown")  # fmt: skip
        return
    if _get(cfg, "modality.video", False):
        idx = frame_indices(window, v.info.fps, v.info.num_frames, int(_get(cfg, "sampling.num_frames", 32)))  # fmt: skip
        item.frame_indices = [int(i) for i in idx]
        item.frame_times = [int(i) / v.info.fps for i in idx]
    if _get(cfg, "modality.audio", False):
        clip_s = float(_get(cfg, "sampling.audio_clip_s", 2.0))
        item.clips = clip_spans(window, clip_s, int(_get(cfg, "sampling.audio_clips", 8)))


def run_path(run: Run, key: str) -> Path | None:
    """A path setting of the run (`dataset.root`, `cache.dir`); a relative one is taken from the
    directory the run started in (Hydra's runtime.cwd), as the run itself took it."""
    raw = _get(run.config, key)
    if not raw:
        return None
    path = Path(str(raw))
    if not path.is_absolute():
        hydra_yaml = run.path / ".hydra" / "hydra.yaml"
        hydra = yaml.safe_load(hydra_yaml.read_text()) if hydra_yaml.is_file() else None
        cwd = _get(hydra or {}, "hydra.runtime.cwd")
        path = Path(cwd) / path if cwd else path
    return path.resolve()


def items_of(groups: dict[Setting, list[Run]], datasets: Datasets) -> list[Item]:
    """Every (setting, run, video), settings in report order, runs by seed, videos in row order."""
    out: list[Item] = []
    for s, runs in enumerate(groups.values()):
        for run in sorted(runs, key=lambda r: str(r.seed)):
            root = run_path(run, "dataset.root")
            ds = datasets.get(root) if root is not None else None
            for row in run.predictions:
                video = ds.videos.get(str(row["video_id"])) if ds is not None else None
                item = Item(s, run, row, root, video)
                if root is None:
                    item.notes.append("the run's config names no dataset.root")
                elif ds is None:
                    item.notes.append(datasets.errors.get(root, f"{root}: cannot be read"))
                elif video is None:
                    item.notes.append(f"video {row['video_id']} is not in {root} now")
                _positions(item, run.config)
                out.append(item)
    return out
