"""Reads dlib's serialised MMOD face detector (`mmod_human_face_detector.dat`, shipped by
face-recognition-models) without dlib: the weights come from the file as dlib wrote it.

dlib's format (serialize.h, float_details.h, cuda/tensor.h, dnn/{core,layers,input,loss}.h):
- integers: a control byte (0x80 if negative | byte count 1..8), then |value| little-endian;
- floats/doubles: an integer mantissa and an integer exponent (value = m * 2**e);
- strings: an unsigned length, then the bytes; bools: ASCII '1' / '0';
- tensors: version 2, n, k, nr, nc, then raw little-endian float32 (NCHW).
The network `loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<input_rgb_image_pyramid<
pyramid_down<6>>>>>>>>` is written as: the loss record, all 19 add_layer versions outermost first,
the input layer, then each layer's details innermost first, each followed by a trailer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYERS = 19  # 7 convolutions, 6 batch-norm (affine at inference) and 6 relu layers
# The architecture the file must hold, innermost first: (kind, filters, kernel, stride).
ARCH = [("con", 16, 5, 2), ("bn",), ("relu",), ("con", 32, 5, 2), ("bn",), ("relu",),
        ("con", 32, 5, 2), ("bn",), ("relu",),
        *[x for _ in range(3) for x in (("con", 45, 5, 1), ("bn",), ("relu",))],
        ("con", 1, 9, 1)]  # fmt: skip


class MmodFormatError(ValueError):
    """The file is not the MMOD face detector dlib wrote; names the file and the byte."""


@dataclass(frozen=True)
class Conv:
    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray  # (out,)
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    """dlib's bn_con at inference: y = gamma / sqrt(var + eps) * (x - mean) + beta."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class MmodModel:
    avg_rgb: tuple[float, float, float]  # subtracted from pixels, then / 256
    window: tuple[int, int]  # detector window (width, height) in input-tensor pixels
    nms_iou: float  # overlaps_nms: boxes overlapping more than this are suppressed
    nms_covered: float
    pyramid_padding: int
    pyramid_outer_padding: int
    layers: list[Conv | Affine | None]  # innermost first; None: relu


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> MmodFormatError:
        return MmodFormatError(f"{self.path}: {what} at byte {self.pos}")

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends ({n} bytes wanted)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, signed: bool = True) -> int:
        ctrl = self.raw(1)[0]
        n, neg = ctrl & 0x0F, bool(ctrl & 0x80)
        if not 1 <= n <= 8 or ctrl & 0x70 or (neg and not signed):
            raise self.fail(f"bad integer control byte 0x{ctrl:02x}")
        mag = int.from_bytes(self.raw(n), "little")
        return -mag if neg else mag

    def double(self) -> float:
        m, e = self.int(), self.int()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[e] if e in special else math.ldexp(float(m), e)

    def string(self) -> str:
        return self.raw(self.int(signed=False)).decode("latin-1")

    def boolean(self) -> bool:
        c = self.raw(1)
        if c not in (b"0", b"1"):
            raise self.fail(f"bad bool {c!r}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        if (v := self.int()) != 2:
            raise self.fail(f"tensor version {v}, expected 2")
        shape = [self.int() for _ in range(4)]
        return np.frombuffer(self.raw(4 * math.prod(shape)), "<f4").reshape(shape).copy()

    def alias(self) -> tuple[int, ...]:
        if (v := self.int()) != 1:
            raise self.fail(f"alias_tensor version {v}, expected 1")
        return tuple(self.int() for _ in range(4))

    def expect(self, want: str) -> None:
        at, got = self.pos, self.string()
        if got != want:
            self.pos = at
            raise self.fail(f"{got!r} where {want!r} belongs")


def _options(r: _Reader) -> tuple[tuple[int, int], float, float]:
    if (v := r.int()) != 1:  # the released file's mmod_options version
        raise r.fail(f"mmod_options version {v}, expected 1")
    window = (r.int(signed=False), r.int(signed=False))
    for _ in range(3):  # loss per false alarm / missed target, truth match IoU: training only
        r.double()
    nms_iou, nms_covered = r.double(), r.double()
    r.double(), r.double()  # overlaps_ignore: training only
    return window, nms_iou, nms_covered


def _conv(r: _Reader, filters: int, kernel: int, stride: int) -> Conv:
    params = r.tensor().reshape(-1)
    nf, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    fshape, _bias_shape = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.double()
    if (nf, nr, nc, sy, sx) != (filters, kernel, kernel, stride, stride) or py != px:
        raise r.fail(f"conv {nf}x{nr}x{nc}/{sy} where {filters}x{kernel}x{kernel}/{stride} "
                     "belongs")  # fmt: skip
    n = math.prod(fshape)
    if params.size != n + nf:
        raise r.fail(f"conv params {params.size} != {n} weights + {nf} biases")
    return Conv(params[:n].reshape(fshape), params[n:], stride, py)


def _batch_norm(r: _Reader) -> Affine:
    params = r.tensor().reshape(-1)
    r.alias(), r.alias()
    r.tensor(), r.tensor()  # batch statistics of the last training step
    mean, var = r.tensor().reshape(-1), r.tensor().reshape(-1)
    r.int(), r.int()  # num_updates, running_stats_window_size
    for _ in range(4):
        r.double()
    eps = r.double()
    gamma, beta = np.split(params, 2)
    scale = (gamma / np.sqrt(var + np.float32(eps))).astype(np.float32)
    return Affine(scale, (beta - scale * mean).astype(np.float32))


def read_mmod(path: str | Path) -> MmodModel:
    """Parse the whole file; any departure from the expected network is an error."""
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    r.int()  # add_loss_layer version
    r.expect("loss_mmod_")
    window, nms_iou, nms_covered = _options(r)
    versions = [r.int() for _ in range(LAYERS)]  # outermost first
    name = r.string()
    if name not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise r.fail(f"input layer {name!r}")
    avg = (r.double(), r.double(), r.double())
    pad = (r.int(signed=False), r.int(signed=False)) if name.endswith("2") else (10, 11)
    layers: list[Conv | Affine | None] = []
    for i, spec in enumerate(ARCH):
        kind = r.string()
        if spec[0] == "con" and kind.startswith("con_"):
            layers.append(_conv(r, *spec[1:]))
        elif spec[0] == "bn" and kind == "bn_con2":
            layers.append(_batch_norm(r))
        elif spec[0] == "relu" and kind.startswith("relu_"):
            layers.append(None)
        else:
            raise r.fail(f"layer {i} is {kind!r}, expected {spec[0]}")
        if kind in ("con_5", "con_6"):
            raise r.fail(f"{kind}: this reader knows con_4 (bias on, no fused relu)")
        r.boolean(), r.boolean(), r.boolean()  # setup / stale-gradient flags
        r.tensor(), r.tensor()  # gradient and cached output buffers (empty)
        if i == 0:  # the layer next to the input also stores its final gradient
            r.tensor()
            if versions[-1] >= 3:
                r.int()
        elif versions[LAYERS - 1 - i] == 2:
            r.tensor()
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes left after the network")
    return MmodModel(avg, window, nms_iou, nms_covered, *pad, layers)
