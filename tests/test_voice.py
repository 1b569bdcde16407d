"""McAdams voice anonymisation: the numba kernel against an independent per-frame oracle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import librosa
import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import lfilter, tf2zpk

from eald.deid import voice
from eald.deid.voice import draw_lambda, mcadams, mcadams_reference

SR = 16000
TOL = 1e-5  # max abs difference after peak normalisation, as the spec asks


def oracle(x: np.ndarray, sr: int, lam: float, order: int = 20) -> np.ndarray:
    """The B2 steps written out plainly, one frame at a time (framing and edge cases as documented
    in eald.deid.voice: complete frames from sample 0, no end padding, silent frames pass, poles
    outside the unit circle reflected inside)."""
    x = x / np.max(np.abs(x))
    winlen, hop = int(0.020 * sr + 1e-9), int(0.010 * sr + 1e-9)
    hann = np.hanning(winlen)
    win = np.sqrt(hann / (np.sum(hann) / hop))
    out = np.zeros(len(x))
    for m in range(1 + (len(x) - winlen) // hop):
        idx = slice(m * hop, m * hop + winlen)
        frame = x[idx] * win
        if not np.any(frame):
            out[idx] += frame * win
            continue
        a = librosa.lpc(frame, order=order)
        poles = tf2zpk(np.array([1.0]), a)[1]
        new, gain = poles.copy(), 1.0
        for k, p in enumerate(poles):
            if p.imag != 0:
                phi = np.angle(p)
                new[k] = np.abs(p) * np.exp(1j * np.sign(phi) * np.abs(phi) ** lam)
            if np.abs(new[k]) > 1:  # unstable (Burg on a pure tone): reflect, keep |A_new|
                gain *= np.abs(new[k])
                new[k] = 1 / np.conj(new[k])
        a_new = gain * np.real(np.poly(new))
        excitation = lfilter(a, np.array([1.0]), frame)
        out[idx] += lfilter(np.array([1.0]), a_new, excitation) * win
    return out / np.max(np.abs(out))


def voiced(seconds: float = 2.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A jittered 120 Hz glottal pulse train through three formant resonators, plus noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    period = sr / 120
    src = np.zeros(n)
    pos = np.cumsum(period * (1 + 0.02 * rng.standard_normal(int(n / period) + 2)))
    src[pos[pos < n].astype(int)] = 1.0
    y = lfilter([1.0, -0.9], [1.0], src)  # glottal tilt
    for f, bw in ((700, 80), (1220, 90), (2600, 120)):
        r = np.exp(-np.pi * bw / sr)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r], y)
    return y + 1e-3 * np.std(y) * rng.standard_normal(n)


def with_silence(sr: int = SR) -> np.ndarray:
    x = voiced(2.0, sr, seed=1)
    x[: sr // 10] = 0.0  # leading, inner and trailing exact zeros
    x[int(0.7 * sr) : int(1.1 * sr)] = 0.0
    x[-sr // 5 :] = 0.0
    return x


def pure_tone(sr: int = SR) -> np.ndarray:
    """440 Hz: Burg's recursion goes unstable on it (poles up to |p| ~ 1e4), B2 overflows."""
    return np.sin(2 * np.pi * 440 / sr * np.arange(sr // 2))


SIGNALS = {"voiced": voiced, "silences": with_silence, "tone": pure_tone}


@pytest.mark.parametrize("lam", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("signal", ["voiced", "silences"])
def test_equals_oracle(signal: str, lam: float) -> None:
    x = SIGNALS[signal]()
    y = mcadams(x, SR, lam=lam)
    ref = oracle(x, SR, lam)
    assert y.shape == x.shape
    assert np.max(np.abs(y - ref)) < TOL


def test_fallback_frames_equal_oracle(monkeypatch) -> None:
    # Without fixed Bairstow starts the kernel gives up on frames (cold warm starts); those go
    # through the per-frame reference and must still land in the right place.
    monkeypatch.setattr(voice, "_STARTS", np.zeros((0, 2)))
    x = with_silence()
    y, w, hop, n_frames = voice._prepare(x, SR, 0.8, 20, 10, 20)
    failed = np.zeros(n_frames, dtype=np.bool_)
    voice._kernel(y, w, hop, 20, 0.8, voice._STARTS, np.zeros_like(y), failed)
    assert 0 < failed.sum()
    assert np.max(np.abs(mcadams(x, SR, 0.8) - oracle(x, SR, 0.8))) < TOL


def test_burg_is_librosa_bit_for_bit() -> None:
    # Burg is chaotic on a pure tone, so only bit-exact agreement keeps mcadams near the oracle;
    # compile the kernel first (a fastmath caller would leak its flags into _burg).
    mcadams(voiced(0.1), SR)
    for x in (pure_tone(), voiced(0.5)):
        y, w, hop, n_frames = voice._prepare(x, SR, 0.8, 20, 10, 20)
        a, prev, f, b = np.empty(21), np.empty(21), np.empty(len(w) - 1), np.empty(len(w) - 1)
        for m in range(n_frames):
            frame = y[m * hop : m * hop + len(w)] * w
            voice._burg(frame, 20, a, prev, f, b)
            assert np.array_equal(a, librosa.lpc(frame, order=20))


def test_pure_tone_is_finite_and_equals_oracle() -> None:
    x = pure_tone()
    y = mcadams(x, SR)
    assert np.all(np.isfinite(y)) and abs(np.max(np.abs(y)) - 1.0) < 1e-6
    assert np.max(np.abs(y - oracle(x, SR, 0.8))) < TOL


# Burg is chaotic on a pure tone: one-ulp differences between the two window computations grow
# to ~1e-7 there with numpy 2.4 / scipy 1.17 (under 1e-9 with earlier releases), so the tone is
# held to the spec's tolerance and the non-chaotic signal to 1e-9.
@pytest.mark.parametrize("signal,tol", [("silences", 1e-9), ("tone", TOL)])
def test_reference_equals_oracle(signal: str, tol: float) -> None:
    x = SIGNALS[signal]()
    assert np.max(np.abs(mcadams_reference(x, SR, 0.8) - oracle(x, SR, 0.8))) < tol


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not on PATH")
def test_equals_oracle_on_speech(tmp_path) -> None:
    wav = tmp_path / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog, twice."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    sr, pcm = wavfile.read(wav)
    x = pcm.astype(np.float64) / 32768.0
    for lam in (0.5, 0.8):
        assert np.max(np.abs(mcadams(x, sr, lam=lam) - oracle(x, sr, lam))) < TOL


def test_length_peak_and_change() -> None:
    x = voiced()
    for n in (len(x), len(x) - 77):  # also a length that leaves a partial hop at the end
        y = mcadams(x[:n], SR)
        assert y.shape == (n,) and y.dtype == np.float64
        assert abs(np.max(np.abs(y)) - 1.0) < 1e-6
    assert np.corrcoef(mcadams(x, SR, lam=0.8), x)[0, 1] < 0.9


def test_lambda_one_is_near_identity() -> None:
    # With lam = 1 the poles do not move, so each frame comes back as analysed and the OLA of
    # w**2 sums to ~1 (np.hanning's period is winlen - 1, a ripple well under 1%). The first and
    # last window are only half covered, so compare away from them.
    x = voiced()
    y = mcadams(x, SR, lam=1.0)
    inner = slice(320, len(x) - 320)
    assert np.corrcoef(y[inner], x[inner])[0, 1] > 0.99


def test_float32_and_short_and_silent_input() -> None:
    x = voiced(0.5).astype(np.float32)
    assert np.max(np.abs(mcadams(x, SR) - mcadams(x.astype(np.float64), SR))) < 1e-12
    short = mcadams(x[:100], SR)  # under one window: zero-padded to one frame, cut back
    assert short.shape == (100,) and np.all(np.isfinite(short))
    assert np.max(np.abs(short)) == pytest.approx(1.0)
    assert np.array_equal(mcadams(np.zeros(SR), SR), np.zeros(SR))
    assert mcadams(np.zeros(0), SR).shape == (0,)


def test_bad_input() -> None:
    x = voiced(0.2)
    with pytest.raises(ValueError, match="1-D"):
        mcadams(np.stack([x, x]), SR)
    bad = x.copy()
    bad[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mcadams(bad, SR)
    for sr in (0, -16000):
        with pytest.raises(ValueError, match="sample rate"):
            mcadams(x, sr)
    with pytest.raises(ValueError, match="float"):
        mcadams((x * 3e4).astype(np.int16), SR)
    with pytest.raises(ValueError, match="lam"):
        mcadams(x, SR, lam=0.0)


def test_draw_lambda() -> None:
    vals = [draw_lambda(f"video-{i}") for i in range(50)]
    assert all(0.5 <= v <= 0.9 for v in vals)
    assert len(set(vals)) == 50
    assert draw_lambda("video-3") == vals[3]
    assert draw_lambda("video-3", seed=1) != vals[3]
    assert 0.6 <= draw_lambda("x", 0.6, 0.7) <= 0.7
    code = "from eald.deid.voice import draw_lambda; print(repr(draw_lambda('video-3')))"
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert float(run.stdout) == vals[3]
