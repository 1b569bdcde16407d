"""dlib's MMOD face detector (`cnn_face_detection_model_v1`) as a batched torch network.

The forward pass follows dlib's code (input.h, image_pyramid.h, loss.h), with these facts:
- the input is an image pyramid (each level floor(5/6) of the previous) tiled into one tensor:
  a first column downwards, then a second column upwards along the right edge until a tile would
  overlap level 0 (dlib compares sizes unsigned; the wrap-around is reproduced), padding 10,
  outer padding 11, zeros (= the mean colour) elsewhere;
- level 0 is (pixel - avg) / 256 in R, G, B; every later level is an align-corners bilinear
  resize of the previous, already normalised, tile;
- convolutions pad k//2 when the stride is 1 and nothing otherwise; batch norm is folded;
- a score map cell (r, c) > 0 is a detection centred at tensor point (8c + 14, 8r + 14), an 80x80
  window, mapped into the tile nearest its centre and up the pyramid by p*1.2 + 0.3 per level,
  rounded half away from zero (C lround) before non-maximum suppression;
- greedy NMS in score order; two boxes overlap when intersection / (area of the box enclosing
  both) > 0.338 (dlib's test uses the enclosing box, not the union), or a box is covered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eald.deid.mmod.dlib_format import Affine, Conv, MmodModel

_U64 = 1 << 64
Rect = tuple[int, int, int, int]  # inclusive left, top, right, bottom


@lru_cache(maxsize=64)
def tile_layout(height: int, width: int, padding: int = 10, outer: int = 11,
                ) -> tuple[tuple[Rect, ...], int, int]:  # fmt: skip
    """Where each pyramid level lies in the tiled input: (rects, tensor rows, tensor cols)."""
    sizes = [(width, height)]
    while True:
        h, w = math.floor(5 / 6 * sizes[-1][1]), math.floor(5 / 6 * sizes[-1][0])
        if h * w == 0 or h < 5:
            break
        sizes.append((w, h))
    w0, h0 = sizes[0]
    total = sum(h + padding for _, h in sizes) - 2 * padding
    height_used, prev_w = 0, 0
    for w, h in sizes:  # how many levels fit the first column (unsigned arithmetic, as dlib)
        if (
            w <= (w0 - prev_w - padding) % _U64
            and ((height_used - h0) * 2) % _U64 >= (total - h0) % _U64
        ):
            break
        height_used += h + padding
        prev_w = w
    height_used -= padding
    rows, cols = height_used + 2 * outer, w0 + 2 * outer
    rects: list[Rect] = []
    y = outer
    while y < height_used + outer and len(rects) < len(sizes):
        w, h = sizes[len(rects)]
        rects.append((outer, y, outer + w - 1, y + h - 1))
        y += h + padding
    y -= padding
    first = rects[0]
    while len(rects) < len(sizes):  # second column, upwards along the right edge
        w, h = sizes[len(rects)]
        r, b = outer + w0 - 1, y - 1
        rect = (r - w + 1, b - h + 1, r, b)
        if max(rect[0], first[0]) <= min(r, first[2]) and max(rect[1], first[1]) <= min(
            b, first[3]
        ):
            break
        rects.append(rect)
        y -= h + padding
    return tuple(rects), rows, cols


class MmodNet(nn.Module):
    """The convolution stack, batch norm folded into the convolutions before it."""

    def __init__(self, model: MmodModel) -> None:
        super().__init__()
        convs: list[nn.Conv2d] = []
        for layer in model.layers:
            if isinstance(layer, Conv):
                out, cin, k, _ = layer.weight.shape
                conv = nn.Conv2d(cin, out, k, stride=layer.stride, padding=layer.padding)
                conv.weight.data = torch.from_numpy(layer.weight)
                conv.bias.data = torch.from_numpy(layer.bias)
                convs.append(conv)
            elif isinstance(layer, Affine):  # y = s * (Wx + b) + t
                s, t = torch.from_numpy(layer.scale), torch.from_numpy(layer.shift)
                convs[-1].weight.data = convs[-1].weight.data * s[:, None, None, None]
                convs[-1].bias.data = convs[-1].bias.data * s + t
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs[:-1]:
            x = F.relu(conv(x))
        return self.convs[-1](x)[:, 0]


def pyramid_input(frames: Tensor, model: MmodModel) -> tuple[Tensor, tuple[Rect, ...]]:
    """(B, H, W, 3) uint8 RGB (any device) -> the tiled (B, 3, rows, cols) input tensor."""
    b, h, w, _ = frames.shape
    rects, rows, cols = tile_layout(h, w, model.pyramid_padding, model.pyramid_outer_padding)
    x = frames.new_zeros((b, 3, rows, cols), dtype=torch.float32)
    avg = torch.tensor(model.avg_rgb, dtype=torch.float32, device=frames.device)
    l0, t0, r0, b0 = rects[0]
    x[:, :, t0 : b0 + 1, l0 : r0 + 1] = (
        frames.permute(0, 3, 1, 2).float() - avg[:, None, None]
    ) / 256
    for (pl, pt, pr, pb), (lx, tx, rx, bx) in zip(rects, rects[1:], strict=False):
        x[:, :, tx : bx + 1, lx : rx + 1] = F.interpolate(
            x[:, :, pt : pb + 1, pl : pr + 1], size=(bx - tx + 1, rx - lx + 1),
            mode="bilinear", align_corners=True,
        )  # fmt: skip
    return x, rects


def _lround(v: np.ndarray) -> np.ndarray:
    return np.where(v >= 0, np.floor(v + 0.5), -np.floor(-v + 0.5)).astype(np.int64)


def decode(scores: np.ndarray, rects: Sequence[Rect], model: MmodModel,
           threshold: float = 0.0) -> list[tuple[Rect, float]]:  # fmt: skip
    """One score map -> NMS-kept (inclusive rect in image pixels, score), best first."""
    rr, cc = np.nonzero(scores > threshold)
    if len(rr) == 0:
        return []
    s = scores[rr, cc].astype(np.float64)
    px, py = 8.0 * cc + 14, 8.0 * rr + 14
    hw, hh = (model.window[0] - 1) / 2, (model.window[1] - 1) / 2
    box = np.stack([px - hw, py - hh, px + hw, py + hh], 1)
    r = np.asarray(rects, dtype=np.float64)  # nearest tile to each centre (0 when inside)
    dx = np.maximum(0, np.maximum(r[None, :, 0] - px[:, None], px[:, None] - r[None, :, 2]))
    dy = np.maximum(0, np.maximum(r[None, :, 1] - py[:, None], py[:, None] - r[None, :, 3]))
    level = np.argmin(np.hypot(dx, dy), axis=1)
    box -= np.stack([r[level, 0], r[level, 1]] * 2, 1)
    for k in range(1, int(level.max()) + 1):  # p * 6/5 + 0.3 once per level, in double
        up = level >= k
        box[up] = box[up] * 1.2 + 0.3
    boxes = _lround(box)
    order = np.argsort(-s, kind="stable")
    kept: list[int] = []
    for i in order:
        if not kept or not _overlaps(boxes[i], boxes[kept], model).any():
            kept.append(i)
    return [(tuple(int(v) for v in boxes[i]), float(s[i])) for i in kept]  # type: ignore[misc]


def _overlaps(a: np.ndarray, kept: np.ndarray, model: MmodModel) -> np.ndarray:
    def area(x: np.ndarray) -> np.ndarray:
        return np.maximum(0, x[..., 2] - x[..., 0] + 1) * np.maximum(0, x[..., 3] - x[..., 1] + 1)

    lo, hi = np.maximum(a[:2], kept[:, :2]), np.minimum(a[2:], kept[:, 2:])
    inner = np.where((lo <= hi).all(1), area(np.concatenate([lo, hi], 1)), 0)
    outer = area(
        np.concatenate([np.minimum(a[:2], kept[:, :2]), np.maximum(a[2:], kept[:, 2:])], 1)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inner > 0) & ((inner / outer > model.nms_iou)
                              | (inner / area(a) > model.nms_covered)
                              | (inner / area(kept) > model.nms_covered))  # fmt: skip
