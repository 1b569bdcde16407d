"""The paper's face detector, dlib's CNN (MMOD), as a batched torch network (`cnn`), its weights
read from dlib's own `mmod_human_face_detector.dat`. `cnn_dlib` keeps dlib itself as the
reference; tests/test_mmod.py holds the two to the same detections."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from eald.deid.detectors import Detection, _Lazy, _resize, _to_source, dlib_model_path
from eald.deid.mmod.dlib_format import MmodFormatError, MmodModel, read_mmod

__all__ = ["MmodFormatError", "MmodModel", "TorchMmod", "read_mmod", "load_network"]


@lru_cache(maxsize=4)
def load_network(device: str = "cpu") -> tuple[MmodModel, Any]:
    from eald.deid.mmod.network import MmodNet

    model = read_mmod(dlib_model_path("mmod_human_face_detector.dat"))
    return model, MmodNet(model).to(device).eval().requires_grad_(False)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchMmod(_Lazy):
    """dlib's MMOD detector in torch. Boxes as dlib returns them (inclusive corners, not clipped,
    scores > threshold); frames of one size run as one batch through the network."""

    def _run(self, img: np.ndarray) -> tuple[list, list]:
        (dets,) = self.run_batch([img])
        return [(x0, y0, x1 + 1, y1 + 1) for (x0, y0, x1, y1), _ in dets], [s for _, s in dets]

    def run_batch(self, imgs: Sequence[np.ndarray]) -> list[list[tuple[tuple, float]]]:
        import torch

        from eald.deid.mmod.network import decode, pyramid_input

        device = resolve_device(getattr(self.plan, "device", "cpu"))
        model, net = load_network(device)
        with torch.inference_mode():
            frames = torch.from_numpy(np.stack([np.ascontiguousarray(i) for i in imgs])).to(device)
            x, rects = pyramid_input(frames, model)
            scores = net(x).float().cpu().numpy()
        return [decode(s, rects, model, self.plan.threshold) for s in scores]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """`detect` for many frames of one size at once."""
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        imgs = [_resize(f, self.plan.resize) for f in frames]
        out = []
        for dets in self.run_batch(imgs):
            boxes = [(x0, y0, x1 + 1, y1 + 1) for (x0, y0, x1, y1), _ in dets]
            out.append(_to_source(boxes, [s for _, s in dets], self.plan.resize, w, h))
        return out
