"""Tests for eald.data.fbank against a float64 numpy oracle written from the Kaldi definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eald.data.fbank import _fbank, clip_starts, imagebind_melspec, kaldi_fbank

SR = 16000
EPS32 = float(np.finfo(np.float32).eps)
# ImageBind pads with 0 before Normalize(mean=-4.268, std=9.138), in float32.
PAD_VALUE = (torch.zeros((), dtype=torch.float32) - (-4.268)) / 9.138


def _kaldi_mel(f: float) -> float:
    return 1127.0 * math.log(1.0 + f / 700.0)


def reference_fbank(
    x: np.ndarray,
    sr: int = SR,
    num_bins: int = 128,
    frame_ms: float = 25.0,
    shift_ms: float = 10.0,
    preemph: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> np.ndarray:
    """Straightforward float64 Kaldi fbank (snip_edges, no dither, no energy, Hanning)."""
    x = np.asarray(x, dtype=np.float64)
    win = int(sr * frame_ms / 1000)
    shift = int(sr * shift_ms / 1000)
    padded = 1
    while padded < win:
        padded *= 2
    n_frames = 0 if len(x) < win else 1 + (len(x) - win) // shift

    # Mel banks, one bin and one FFT bin at a time.
    n_fft_bins = padded // 2
    if high_freq <= 0:
        high_freq = sr / 2 + high_freq
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    banks = np.zeros((num_bins, n_fft_bins + 1))
    for b in range(num_bins):
        left = mel_low + b * delta
        center = left + delta
        right = center + delta
        for k in range(n_fft_bins):
            m = _kaldi_mel(k * sr / padded)
            up = (m - left) / (center - left)
            down = (right - m) / (right - center)
            banks[b, k] = max(0.0, min(up, down))

    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / (win - 1)) for n in range(win)])
    out = np.zeros((n_frames, num_bins))
    for t in range(n_frames):
        frame = x[t * shift : t * shift + win].copy()
        frame -= frame.mean()
        emph = np.empty_like(frame)
        emph[0] = frame[0] - preemph * frame[0]
        for i in range(1, win):
            emph[i] = frame[i] - preemph * frame[i - 1]
        power = np.abs(np.fft.rfft(emph * window, padded)) ** 2
        for b in range(num_bins):
            out[t, b] = math.log(max(float(power @ banks[b]), EPS32))
    return out


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    return {
        "random": rng.uniform(0.1, 0.5, size=2 * SR) * rng.choice([-1.0, 1.0], size=2 * SR),
        "sines": 0.4 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 3000 * t),
        "odd_length": rng.uniform(-0.3, 0.3, size=12345),
    }


@pytest.fixture(scope="module")
def cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(float32 signal, float64 oracle fbank) per test signal; the oracle is slow-ish."""
    out = {}
    for name, x in _signals().items():
        x32 = x.astype(np.float32)
        out[name] = (x32, reference_fbank(x32))
    return out


@pytest.mark.parametrize("name", ["random", "sines", "odd_length"])
def test_algorithm_matches_reference_in_float64(cases, name: str) -> None:
    # Same code path as kaldi_fbank, run in float64: isolates the algorithm from rounding.
    x, ref = cases[name]
    got = _fbank(torch.from_numpy(x).double(), SR, 128, 25.0, 10.0, 0.97, 20.0, 0.0, torch.float64)
    assert got.shape == ref.shape == (1 + (len(x) - 400) // 160, 128)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["random", "sines", "odd_length"])
def test_kaldi_fbank_float32_matches_reference(cases, name: str) -> None:
    x, ref = cases[name]
    got = kaldi_fbank(torch.from_numpy(x))
    assert got.dtype == torch.float32
    assert got.shape == ref.shape
    diff = np.abs(got.numpy().astype(np.float64) - ref)
    # Every bin, weak ones included (e.g. the leakage floor between two sines), within 1e-4.
    assert diff.max() < 1e-4


def test_kaldi_fbank_accepts_batch_of_one_and_frame_count() -> None:
    x = torch.from_numpy(_signals()["random"].astype(np.float32))
    assert x.numel() == 32000
    flat = kaldi_fbank(x)
    assert flat.shape == (198, 128)
    torch.testing.assert_close(kaldi_fbank(x.unsqueeze(0)), flat, rtol=0, atol=0)


@pytest.mark.parametrize("n", [0, 1, 399])
def test_short_input(n: int) -> None:
    x = np.zeros(n, dtype=np.float32) + 0.1
    assert kaldi_fbank(torch.from_numpy(x)).shape == (0, 128)
    spec = imagebind_melspec(x)
    assert spec.shape == (1, 128, 204)
    assert torch.all(spec == PAD_VALUE)


def test_imagebind_melspec_padding_and_normalisation() -> None:
    x = _signals()["random"].astype(np.float32) + 0.05  # a DC offset to be removed
    before = x.copy()
    spec = imagebind_melspec(x)
    assert spec.shape == (1, 128, 204)
    np.testing.assert_array_equal(x, before)  # caller's array untouched

    pad = spec[0, :, 198:]
    assert torch.all(pad == PAD_VALUE)
    assert abs(PAD_VALUE.item() - 4.268 / 9.138) < 1e-6

    wav = torch.from_numpy(before)
    manual = (kaldi_fbank(wav - wav.mean()).T - (-4.268)) / 9.138
    torch.testing.assert_close(spec[0, :, :198], manual, rtol=0, atol=0)
    assert not torch.allclose(spec[0, :, 0], PAD_VALUE)


def test_imagebind_melspec_tensor_input_not_mutated() -> None:
    wav = torch.from_numpy(_signals()["sines"].astype(np.float32)) + 0.2
    before = wav.clone()
    imagebind_melspec(wav)
    torch.testing.assert_close(wav, before, rtol=0, atol=0)


def test_imagebind_melspec_cuts_long_clip() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, size=3 * SR).astype(np.float32)
    spec = imagebind_melspec(x)
    assert spec.shape == (1, 128, 204)
    wav = torch.from_numpy(x)
    full = (kaldi_fbank(wav - wav.mean()).T + 4.268) / 9.138
    assert full.shape[1] == 1 + (3 * SR - 400) // 160 > 204
    torch.testing.assert_close(spec[0], full[:, :204], rtol=0, atol=0)


def test_clip_starts() -> None:
    assert clip_starts(10, 2, 3) == [0, 4, 8]
    assert clip_starts(1.5, 2, 3) == [0, 0, 0]
    assert clip_starts(10, 2, 1) == [0]
    assert all(isinstance(s, float) for s in clip_starts(10, 2, 3))
