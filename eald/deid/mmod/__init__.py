"""The paper's face detector, dlib's CNN (MMOD), as a batched torch network (`cnn`), its weights
read from dlib's own `mmod_human_face_detector.dat`. `cnn_dlib` keeps dlib itself as the
reference; tests/test_mmod.py holds the two to the same detections."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from eald.deid.detectors import Detection, _Lazy, _resize, dlib_model_path
from eald.deid.mmod.dlib_format import MmodFormatError, MmodModel, read_mmod
from eald.device import resolve_device

__all__ = ["MmodFormatError", "MmodModel", "TorchMmod", "read_mmod", "load_network"]


@lru_cache(maxsize=4)
def load_network(device: str = "cpu") -> tuple[MmodModel, Any]:
    from eald.deid.mmod.network import MmodNet

    model = read_mmod(dlib_model_path("mmod_human_face_detector.dat"))
    return model, MmodNet(model).to(device).eval().requires_grad_(False)


class TorchMmod(_Lazy):
    """dlib's MMOD detector in torch. Boxes as dlib returns them (inclusive corners, not clipped,
    scores > threshold); frames of one size run as one batch through the network."""

    def run_batch(self, imgs: Sequence[np.ndarray]) -> list[list[tuple[tuple, float]]]:
        """Per image: (inclusive rect, score) pairs, best first, as dlib's Python API."""
        import torch

        from eald.deid.mmod.network import decode, pyramid_input

        model, net = load_network(resolve_device(getattr(self.plan, "device", "cpu")))
        with torch.inference_mode():
            device = next(net.parameters()).device
            frames = torch.from_numpy(np.stack([np.ascontiguousarray(i) for i in imgs])).to(device)
            x, rects = pyramid_input(frames, model)
            scores = net(x).float().cpu().numpy()
        return [decode(s, rects, model, self.plan.threshold) for s in scores]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        runs = self._run_batch([_resize(f, self.plan.resize) for f in frames]) if frames else []
        return [self._to_source(f, run) for f, run in zip(frames, runs, strict=True)]

    def _run(self, img: np.ndarray) -> tuple[list, list]:
        return self._run_batch([img])[0]

    def _run_batch(self, imgs: list[np.ndarray]) -> list[tuple[list, list]]:
        # dlib's inclusive corners -> end-exclusive boxes, as every detector returns them
        return [([(x0, y0, x1 + 1, y1 + 1) for (x0, y0, x1, y1), _ in dets], [s for _, s in dets])
                for dets in self.run_batch(imgs)]  # fmt: skip
