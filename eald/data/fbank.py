"""Kaldi-compatible log-mel filterbanks and ImageBind audio preprocessing, in pure torch.

ImageBind's audio encoder was trained on ``torchaudio.compliance.kaldi.fbank`` features.
torchaudio is deliberately not a dependency of this project, so this module re-implements
exactly the subset of that function ImageBind uses (htk_compat, no energy, Hanning window,
no dither, snip_edges, no VTLN), computing in float32 as torchaudio does so that features
match to float32 rounding.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

__all__ = ["clip_starts", "imagebind_melspec", "kaldi_fbank"]

# Kaldi floors energies at float32 epsilon before taking the log.
_EPS = torch.finfo(torch.float32).eps


def _mel(freq: float | torch.Tensor) -> float | torch.Tensor:
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log(1.0 + freq / 700.0)  # not log1p: match torchaudio's rounding
    return 1127.0 * math.log(1.0 + freq / 700.0)


def _mel_banks(
    num_bins: int,
    padded_size: int,
    sample_rate: int,
    low_freq: float,
    high_freq: float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Triangular Kaldi mel filters, shape (num_bins, padded_size // 2 + 1)."""
    num_fft_bins = padded_size // 2
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        # Kaldi convention: a non-positive high_freq is an offset from Nyquist.
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"bad mel range: low={low_freq}, high={high_freq}, nyquist={nyquist}")
    fft_bin_width = sample_rate / padded_size
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)

    # Mel edges and FFT-bin mels in ``dtype`` (float32 mirrors torchaudio's arithmetic).
    b = torch.arange(num_bins, dtype=dtype).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _mel(torch.arange(num_fft_bins, dtype=dtype) * fft_bin_width).unsqueeze(0)

    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    # Kaldi's banks ignore the Nyquist bin; a zero column makes them match the rfft size.
    return torch.nn.functional.pad(banks, (0, 1), value=0.0)


def kaldi_fbank(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Log-mel filterbank identical to ``torchaudio.compliance.kaldi.fbank`` with
    ``htk_compat=True, use_energy=False, window_type='hanning', dither=0.0`` and other defaults.

    ``waveform`` is 1-D or (1, N). Returns (num_frames, num_mel_bins) float32, with
    num_frames = 1 + (N - window) // shift (snip_edges), or 0 when N < window.
    """
    # Computed in float64, returned in float32: torchaudio's all-float32 path loses up to ~2e-3
    # (log) in mel bins 50+ dB below a frame's peak to FFT rounding; float64 keeps every bin
    # within 1e-4 of the exact Kaldi definition.
    return _fbank(
        waveform,
        sample_rate,
        num_mel_bins,
        frame_length_ms,
        frame_shift_ms,
        preemphasis,
        low_freq,
        high_freq,
        dtype=torch.float64,
    ).to(torch.float32)


def _fbank(
    waveform: torch.Tensor,
    sample_rate: int,
    num_mel_bins: int,
    frame_length_ms: float,
    frame_shift_ms: float,
    preemphasis: float,
    low_freq: float,
    high_freq: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``kaldi_fbank`` in any float dtype (float64 lets tests check the algorithm exactly)."""
    x = torch.as_tensor(waveform).to(dtype)
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1:
        raise ValueError(f"expected a mono waveform (N,) or (1, N), got {tuple(x.shape)}")

    window_size = int(sample_rate * frame_length_ms / 1000.0)
    window_shift = int(sample_rate * frame_shift_ms / 1000.0)
    padded_size = 1 << (window_size - 1).bit_length()  # next power of two >= window_size

    num_samples = x.shape[0]
    if num_samples < window_size:
        return torch.zeros((0, num_mel_bins), dtype=dtype, device=x.device)

    # snip_edges=True: only frames that fit entirely in the signal; unfold is a strided view.
    frames = x.unfold(0, window_size, window_shift)
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove_dc_offset

    # Pre-emphasis with the first sample replicated, as Kaldi does per frame.
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - preemphasis * prev

    # Kaldi's "hanning" is the symmetric Hann window: 0.5 - 0.5 cos(2 pi n / (N - 1)).
    window = torch.hann_window(window_size, periodic=False, dtype=dtype, device=x.device)
    frames = frames * window

    spectrum = torch.fft.rfft(frames, n=padded_size)  # n > window zero-pads on the right
    power = spectrum.abs().pow(2.0)

    banks = _mel_banks(num_mel_bins, padded_size, sample_rate, low_freq, high_freq, dtype)
    mel_energies = power @ banks.to(x.device).T
    return torch.clamp(mel_energies, min=_EPS).log()


def imagebind_melspec(
    clip: torch.Tensor | np.ndarray,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    target_length: int = 204,
    mean: float = -4.268,
    std: float = 9.138,
) -> torch.Tensor:
    """ImageBind's ``waveform2melspec`` followed by its Normalize: (1, num_mel_bins, target_length).

    Padding to ``target_length`` happens before normalisation, so padded columns equal
    ``(0 - mean) / std`` exactly as in ImageBind.
    """
    wav = torch.as_tensor(clip).to(torch.float32)
    # Out-of-place, so the caller's array (possibly sharing memory with ``wav``) is untouched.
    wav = wav - wav.mean() if wav.numel() else wav
    fbank = kaldi_fbank(wav, sample_rate=sample_rate, num_mel_bins=num_mel_bins).T

    n_frames = fbank.shape[1]
    if n_frames < target_length:
        fbank = torch.nn.functional.pad(fbank, (0, target_length - n_frames), value=0.0)
    else:
        fbank = fbank[:, :target_length]
    return (fbank.unsqueeze(0) - mean) / std


def clip_starts(duration_s: float, clip_duration_s: float, clips: int) -> list[float]:
    """Clip start times (s) of pytorchvideo's ConstantClipsPerVideoSampler, as ImageBind uses.

    Evenly spaced starts from 0 to ``duration - clip_duration`` (all 0 for short media).
    """
    # pytorchvideo computes with Fractions; doing the same gives correctly rounded floats.
    max_start = Fraction(max(duration_s - clip_duration_s, 0))
    step = max_start / max(clips - 1, 1)
    return [float(step * i) for i in range(clips)]
