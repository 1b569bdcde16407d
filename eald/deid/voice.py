"""Voice de-identification with the McAdams coefficient (VoicePrivacy baseline B2, as in the paper).

20 ms frames every 10 ms, windowed by ``w = sqrt(hanning / K)``, ``K = sum(hanning) / hop``, for
analysis and again for synthesis (the overlap-added ``w**2`` sums to ~1). Per frame: LPC of order
20 (Burg, as ``librosa.lpc``), the poles of ``1/A``, each complex pole's angle moved to
``sign(phi) * |phi|**lam`` (magnitude kept; real poles kept), ``A_new = real(poly(new poles))``,
excitation ``lfilter(A, 1, frame)``, resynthesis ``lfilter(1, A_new, excitation)``, window, OLA.

Framing mirrors B2: complete frames at ``m * hop``, ``m < 1 + (len - winlen) // hop``, no end
padding (a trailing partial hop stays silent). Unlike B2, frame 0 is processed too (B2's
``range(1, Nframes)``, an off-by-one from MATLAB, silences the first 10 ms). Instead of B2's eps
added to the signal, an all-zero frame (or one with non-finite LPC) passes through. Input shorter
than one window is zero-padded to one frame and cut back. Unstable poles: see ``_warp``.

``mcadams`` runs all frames in one numba kernel: Burg in librosa's order of operations; poles by
Bairstow's method (real quadratic factors: real poles stay exactly real, pairs exactly conjugate,
as from np.roots), warm-started from the previous frame's factors and deflated one by one;
direct-form filters. A frame whose roots do not rebuild ``A`` to 1e-10 or that runs out of starts
goes to the per-frame reference. (Batched ``np.linalg.eigvals`` alone costs ~1/7 of the reference.)
``mcadams_reference`` is the plain per-frame loop (librosa, scipy, numpy), also the fallback.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numba import njit

_TINY = float(np.finfo(np.float64).tiny)  # librosa.lpc's epsilon for float64 input
# No fastmath: callees compiled from a fastmath caller inherit its flags, and Burg must stay exact.
_NB = {"cache": True, "error_model": "numpy"}  # x / 0 gives inf/nan instead of checked raises
_BAIRSTOW_ITS = 16  # Newton steps per start; a factor that needs more tries the next start
_REBUILD_TOL = 1e-10  # max |poly(roots) - A| / sum |A| accepted; np.roots reaches ~1e-13
# Fixed Bairstow starts once the warm ones are spent: z = rho * exp(+-i theta) on two circles.
_TH = (np.arange(8) + 0.5) * np.pi / 8
_STARTS = np.array([(2 * rho * np.cos(t), -rho * rho) for rho in (0.9, 0.5) for t in _TH])


def draw_lambda(video_id: str, low: float = 0.5, high: float = 0.9, seed: int = 0) -> float:
    """A McAdams coefficient from U(low, high), fixed per video id (sha256, not Python's hash)."""
    if not low <= high:
        raise ValueError(f"draw_lambda: low={low} must not exceed high={high}")
    digest = hashlib.sha256(f"{seed}\x00{video_id}".encode()).digest()
    u = (int.from_bytes(digest[:8], "big") >> 11) * 2.0**-53  # 53 random bits -> [0, 1)
    return low + (high - low) * u


def _prepare(
    x: np.ndarray, sr: float, lam: float, win_ms: float, hop_ms: float, order: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate; return the peak-normalised float64 signal (zero-padded to one window), window,
    hop and frame count. Scaling first keeps Burg's sums of squares far from over/underflow."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"mcadams: x must be 1-D (mono), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"mcadams: x must be a float array, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("mcadams: x contains NaN or inf")
    if not (np.isfinite(sr) and sr > 0):
        raise ValueError(f"mcadams: sample rate must be positive, got sr={sr}")
    if not (np.isfinite(lam) and lam > 0):
        raise ValueError(f"mcadams: lam must be a positive number, got {lam}")
    if int(order) != order or order < 1:
        raise ValueError(f"mcadams: order must be a positive integer, got {order}")
    winlen, hop = int(win_ms * sr // 1000), int(hop_ms * sr // 1000)  # B2 floors both
    if winlen <= order + 1 or not 1 <= hop <= winlen:
        raise ValueError(f"mcadams: need order+1 < window ({winlen}), 1 <= hop ({hop}) <= window")
    w = np.sqrt(np.hanning(winlen) / (np.hanning(winlen).sum() / hop))
    y = np.zeros(max(len(x), winlen))
    y[: len(x)] = _finish(x.astype(np.float64), len(x))  # float32 / peak would stay float32
    return y, w, hop, 1 + (len(y) - winlen) // hop  # complete frames only, as B2


def _finish(out: np.ndarray, n: int) -> np.ndarray:
    """Cut back to the input length and peak-normalise; silence stays zeros, never NaN."""
    peak = float(np.max(np.abs(out[:n]))) if n else 0.0
    if not math.isfinite(peak):
        raise FloatingPointError("mcadams: resynthesis diverged (non-finite output)")
    return out[:n] / peak if peak > 0 else np.zeros(n)


def _warp(poles: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """New poles and gain: complex ones get angle sign(phi)*min(|phi|**lam, pi) (B2's clip at pi:
    a no-op for lam <= 1), same magnitude; exactly real ones stay (angle pi must stay pi). Poles
    outside the unit circle (Burg's recursion loses precision on near-deterministic frames such
    as pure tones, where B2 overflows) go to 1/conj(p), times |p| to keep |A_new|: stable."""
    phi = np.angle(poles)
    new = np.abs(poles) * np.exp(1j * np.sign(phi) * np.minimum(np.abs(phi) ** lam, np.pi))
    new = np.where(poles.imag != 0, new, poles)
    out = np.abs(new) > 1
    gain = float(np.prod(np.abs(new[out])))
    new[out] = 1 / np.conj(new[out])
    return new, gain


def _frame_reference(frame: np.ndarray, lam: float, order: int) -> np.ndarray:
    """One windowed frame through the B2 steps with librosa/scipy/numpy (before the output
    window). Degenerate frames (all zeros, non-finite LPC) pass through unchanged."""
    import librosa
    from scipy.signal import lfilter, tf2zpk

    if not frame.any():
        return frame
    a = librosa.lpc(frame, order=int(order))
    if not np.all(np.isfinite(a)):
        return frame
    poles, gain = _warp(tf2zpk([1.0], a)[1], lam)
    return lfilter([1.0], gain * np.atleast_1d(np.real(np.poly(poles))), lfilter(a, [1.0], frame))


def mcadams_reference(
    x: np.ndarray, sr: int, lam: float = 0.8, win_ms: float = 20, hop_ms: float = 10,
    order: int = 20,
) -> np.ndarray:  # fmt: skip
    """The straightforward per-frame loop (the speed and accuracy baseline for :func:`mcadams`)."""
    y, w, hop, n_frames = _prepare(x, sr, lam, win_ms, hop_ms, order)
    out = np.zeros_like(y)
    for m in range(n_frames):
        s = m * hop
        out[s : s + len(w)] += w * _frame_reference(y[s : s + len(w)] * w, lam, order)
    return _finish(out, len(x))


@njit(**_NB)
def _burg(y: np.ndarray, order: int, a: np.ndarray, prev: np.ndarray, f: np.ndarray,
          b: np.ndarray) -> None:  # fmt: skip
    """librosa.lpc's Burg recursion on one frame, bit for bit (it is chaotic on pure tones), no
    allocation. f, b: forward/backward errors; at order i the live ones are f[i:], b[:n-1-i]."""
    n = y.shape[0]
    den = 0.0
    for k in range(n - 1):
        f[k] = y[k + 1]
        b[k] = y[k]
        den += f[k] ** 2 + b[k] ** 2
    a[:] = 0.0
    a[0] = 1.0
    for i in range(order):
        m = n - 1 - i
        num = 0.0
        for k in range(m):
            num += b[k] * f[i + k]
        r = num * -2.0 / (den + _TINY)
        prev[:] = a
        for j in range(1, i + 2):
            a[j] = prev[j] + r * prev[i - j + 1]
        for k in range(m):
            fo = f[i + k]
            f[i + k] = fo + r * b[k]
            b[k] = b[k] + r * fo
        den = (1.0 - r**2) * den - b[m - 1] ** 2 - f[i] ** 2


@njit(**_NB)
def _pair(c: float, p: float, t: float, wr: np.ndarray, wi: np.ndarray, i: int) -> None:
    """Roots c + p +- sqrt(p**2 + t) into wr/wi[i:i+2]: two exact reals or a conjugate pair."""
    q = p * p + t
    if q >= 0.0:
        z = p + math.copysign(math.sqrt(q), p)
        wr[i], wr[i + 1] = c + z, (c - t / z if z != 0.0 else c)
        wi[i] = wi[i + 1] = 0.0
    else:
        wr[i] = wr[i + 1] = c + p
        wi[i] = math.sqrt(-q)
        wi[i + 1] = -wi[i]


@njit(**_NB)
def _bairstow(c: np.ndarray, m: int, r: float, s: float, b: np.ndarray,
              d: np.ndarray) -> tuple[bool, float, float]:  # fmt: skip
    """Newton steps on (r, s) until z**2 - r*z - s divides c[:m+1] (monic, m >= 3); then
    deflate: c[:m-1] becomes the quotient. (False, ...) if it needs over _BAIRSTOW_ITS steps."""
    for _ in range(_BAIRSTOW_ITS):
        b[0] = d[0] = c[0]
        b[1] = c[1] + r * b[0]
        d[1] = b[1] + r * d[0]
        for i in range(2, m + 1):  # b: c / factor, remainder in b[m-1:]; d: b / factor
            b[i] = c[i] + r * b[i - 1] + s * b[i - 2]
            d[i] = b[i] + r * d[i - 1] + s * d[i - 2]
        det = d[m - 2] ** 2 - d[m - 1] * d[m - 3]
        dr = (b[m] * d[m - 3] - b[m - 1] * d[m - 2]) / det
        ds = (b[m - 1] * d[m - 1] - b[m] * d[m - 2]) / det
        r, s = r + dr, s + ds
        if abs(dr) + abs(ds) <= 1e-10 * (abs(r) + abs(s)):  # quadratic: error ~ step**2; NaN fails
            b[1] = c[1] + r * b[0]
            for i in range(2, m - 1):
                b[i] = c[i] + r * b[i - 1] + s * b[i - 2]
            c[: m - 1] = b[: m - 1]
            return True, r, s
    return False, r, s


@njit(**_NB)
def _roots(a: np.ndarray, rs: np.ndarray, ss: np.ndarray, starts: np.ndarray, wr: np.ndarray,
           wi: np.ndarray, c: np.ndarray, b: np.ndarray, d: np.ndarray) -> bool:  # fmt: skip
    """Roots of the monic A into wr/wi: quadratic factors z**2 - r*z - s by Bairstow, deflated
    one by one, from the warm starts (rs, ss), then the fixed ones. False if starts run out."""
    m, nr, n_warm = a.shape[0] - 1, 0, rs.shape[0]
    c[: m + 1] = a
    for j in range(n_warm + starts.shape[0]):
        if m < 3:
            break
        r0, s0 = (rs[j], ss[j]) if j < n_warm else (starts[j - n_warm, 0], starts[j - n_warm, 1])
        ok, r, s = _bairstow(c, m, r0, s0, b, d)
        if ok:
            _pair(0.0, 0.5 * r, s, wr, wi, nr)
            nr, m = nr + 2, m - 2
    if m == 2:
        _pair(0.0, -0.5 * c[1], -c[2], wr, wi, nr)
    elif m == 1:
        wr[nr], wi[nr] = -c[1], 0.0
    return m < 3


@njit(**_NB)
def _poly(wr: np.ndarray, wi: np.ndarray, lam: float, warp: bool, cz: np.ndarray,
          out: np.ndarray) -> float:  # fmt: skip
    """out = real(np.poly(roots)); with warp, the roots first go through _warp's rules (angle
    moved, outside ones reflected) and the gain that a_new carries is returned."""
    cz[:] = 0.0
    cz[0] = 1.0
    gain = 1.0
    for k in range(wr.shape[0]):
        z = complex(wr[k], wi[k])
        if warp and wi[k] != 0.0:
            phi = math.atan2(wi[k], wr[k])
            nphi = math.copysign(min(abs(phi) ** lam, math.pi), phi)
            rad = math.hypot(wr[k], wi[k])
            z = complex(rad * math.cos(nphi), rad * math.sin(nphi))
        if warp and abs(z) > 1.0:
            gain *= abs(z)
            z = 1.0 / z.conjugate()
        for j in range(k + 1, 0, -1):
            cz[j] -= z * cz[j - 1]
    for j in range(cz.shape[0]):
        out[j] = cz[j].real
    return gain


@njit(**_NB)
def _kernel(y: np.ndarray, w: np.ndarray, hop: int, order: int, lam: float, starts: np.ndarray,
            out: np.ndarray, failed: np.ndarray) -> None:  # fmt: skip
    """All frames, overlap-added into out; frames it could not do are flagged in failed."""
    n = w.shape[0]
    fr, e, f, b = np.empty(n), np.empty(n), np.empty(n - 1), np.empty(n - 1)
    a, prev, an = np.empty(order + 1), np.empty(order + 1), np.empty(order + 1)
    c, qb, qd = np.empty(order + 1), np.empty(order + 1), np.empty(order + 1)
    cz = np.empty(order + 1, dtype=np.complex128)
    wr, wi = np.zeros(order), np.zeros(order)
    rs, ss = np.zeros(order // 2), np.zeros(order // 2)  # warm starts, carried frame to frame
    for m in range(failed.shape[0]):
        s0 = m * hop
        fr[:] = y[s0 : s0 + n] * w
        if not fr.any():
            continue  # passthrough of zeros
        _burg(fr, order, a, prev, f, b)
        ok = np.all(np.isfinite(a)) and _roots(a, rs, ss, starts, wr, wi, c, qb, qd)
        if ok:  # the roots must rebuild A (deflation is not always stable)
            _poly(wr, wi, 1.0, False, cz, an)
            ok = np.max(np.abs(an - a)) <= _REBUILD_TOL * np.sum(np.abs(a))
        if not ok:
            failed[m] = True
            continue
        for k in range(order // 2):  # next warm starts: z**2 - r*z - s of consecutive roots
            rs[k] = wr[2 * k] + wr[2 * k + 1]
            ss[k] = wi[2 * k] * wi[2 * k + 1] - wr[2 * k] * wr[2 * k + 1]
        gain = _poly(wr, wi, lam, True, cz, an)
        e[:] = fr  # excitation: FIR A(z) with zero initial state, as axpys
        for k in range(1, order + 1):
            for t in range(k, n):
                e[t] += a[k] * fr[t - k]
        for t in range(n):  # resynthesis 1/A_new(z), transposed: push each output forward
            v = e[t]
            out[s0 + t] += v / gain * w[t]  # lfilter(1, gain * an, .) divides by gain
            for k in range(1, min(order, n - 1 - t) + 1):
                e[t + k] -= an[k] * v


def mcadams(
    x: np.ndarray, sr: int, lam: float = 0.8, win_ms: float = 20, hop_ms: float = 10,
    order: int = 20,
) -> np.ndarray:  # fmt: skip
    """McAdams-coefficient voice anonymisation of mono float audio ``x`` at ``sr`` Hz.

    Returns float64 audio of the same length, peak-normalised to 1 (zeros for silence). ``lam``
    < 1 raises formants below 1 rad (sr / 2pi Hz) and lowers those above. ValueError for non-1-D,
    non-float or non-finite input or bad parameters. Equals :func:`mcadams_reference` to ~1e-9
    on speech (~1e-6 on pure tones, whose LPC is ill-conditioned).
    """
    y, w, hop, n_frames = _prepare(x, sr, lam, win_ms, hop_ms, order)
    out = np.zeros_like(y)
    failed = np.zeros(n_frames, dtype=np.bool_)
    _kernel(y, w, hop, int(order), float(lam), _STARTS, out, failed)
    for m in np.flatnonzero(failed):
        s = m * hop
        out[s : s + len(w)] += w * _frame_reference(y[s : s + len(w)] * w, lam, order)
    return _finish(out, len(x))
