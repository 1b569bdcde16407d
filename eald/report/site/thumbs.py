"""Thumbnails of the frames a model was given: decoded at their exact indices (eald.data.media,
the sampler's own reader) from the dataset root the run read, scaled to THUMB_W pixels wide and
stored as JPEG.

They are cached by content, as the stage cache keys answers: the key hashes the video file's
fingerprint, the frame indices, the size and this code's version, so a re-encoded or
de-identified video under the same name gets new thumbnails, and a rebuilt site decodes nothing
it has decoded before. Each key is a directory written whole, then renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from eald.cache import cache_key
from eald.data.dataset import Video
from eald.data.media import file_fingerprint, read_frames

VERSION = "thumbs-1"
THUMB_W = 192
QUALITY = 82


def thumb_key(fingerprint: str, indices: list[int]) -> str:
    """`fingerprint`: the video file's (eald.data.media.file_fingerprint)."""
    return cache_key({"stage": VERSION, "video": fingerprint, "indices": indices,
                      "width": THUMB_W, "quality": QUALITY})  # fmt: skip


def thumbnails(video: Video, indices: list[int], cache_dir: Path, fingerprint: str | None = None
               ) -> tuple[str, list[Path], bool]:  # fmt: skip
    """(key, one JPEG per index in order, whether they were decoded now rather than found in the
    cache). `fingerprint` saves re-reading the file's when the caller has it. Raises MediaError
    naming the file when it cannot be decoded."""
    assert video.path is not None and video.info is not None
    key = thumb_key(fingerprint or file_fingerprint(video.path), indices)
    where = cache_dir / key[:2] / key
    files = [where / f"{k:03d}.jpg" for k in range(len(indices))]
    if all(f.is_file() for f in files):
        return key, files, False
    frames = read_frames(video.path, indices, video.info.fps)
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=where.parent))
    try:
        for k, frame in enumerate(frames):
            img = Image.fromarray(frame)
            h = max(1, round(img.height * THUMB_W / img.width))
            img.resize((THUMB_W, h), Image.Resampling.LANCZOS).save(
                tmp / f"{k:03d}.jpg", format="JPEG", quality=QUALITY
            )
        try:
            os.rename(tmp, where)
        except OSError:  # another build wrote the same key meanwhile: same content, keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return key, files, True
