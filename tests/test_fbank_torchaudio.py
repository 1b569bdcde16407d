"""The project's Kaldi fbanks against torchaudio's own `compliance.kaldi.fbank`, the function
ImageBind and BEATs call. torchaudio is not a dependency: `make setup` unpacks the torchaudio 2.11
wheel (pure-Python `compliance/kaldi.py`) into `.venv/torchaudio-ref` for these tests only.

Measured (max |difference| of log-mel values over speech, white and pink noise, 5 lengths):
- vs torchaudio fed float64: 7.5e-5 (torchaudio builds its mel banks in float32 whatever the
  input; the rest is float64 on both sides). Tolerance 1e-4; BEATs' povey variant: 7.4e-5.
- vs torchaudio fed float32, as ImageBind and BEATs call it: 5.3e-4, which is torchaudio's own
  float32-vs-float64 difference (5.3e-4): ours is never further from torchaudio-in-float64 than
  torchaudio-in-float32 is. Tolerance 1e-3 (povey variant: 1.1e-3, tolerance 2e-3).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.beats import povey_fbank
from eald.data.fbank import imagebind_melspec, kaldi_fbank
from eald.data.synth import synthetic_voice

REF = Path(
    os.environ.get("EALD_TORCHAUDIO_REF", Path(__file__).parents[1] / ".venv/torchaudio-ref")
)
SR = 16000
LENGTHS = (400, 401, 1234, 32000, 40123)  # one frame, one frame + 1, ..., 2 s, 2.5 s + change


@pytest.fixture(scope="module")
def ta_kaldi():
    if not (REF / "torchaudio" / "compliance" / "kaldi.py").is_file():
        pytest.skip(f"torchaudio reference not unpacked at {REF} (make setup does it)")
    sys.path.insert(0, str(REF))
    try:
        return importlib.import_module("torchaudio.compliance.kaldi")
    finally:
        sys.path.remove(str(REF))


def _speech(tmp: Path) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return synthetic_voice(3.0, 120.0, SR, 0).astype(np.float64)
    wav = tmp / "s.wav"
    text = "After the match I felt we had played well, but the result was hard."
    subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
    from eald.data.media import read_audio

    return read_audio(wav, 0.0, 3.0, SR).astype(np.float64)


@pytest.fixture(scope="module")
def signals(tmp_path_factory) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    white = rng.standard_normal(48000) * 0.1
    pink = np.cumsum(rng.standard_normal(48000)) * 1e-3
    return {"speech": _speech(tmp_path_factory.mktemp("sp")), "white": white,
            "pink": pink - pink.mean()}  # fmt: skip


def _ta(ta_kaldi, x: np.ndarray, dtype, **kw) -> torch.Tensor:
    return ta_kaldi.fbank(torch.as_tensor(x[None]).to(dtype), sample_frequency=SR, dither=0.0,
                          num_mel_bins=128, **kw)  # fmt: skip


IMAGEBIND = {"htk_compat": True, "use_energy": False, "window_type": "hanning"}


@pytest.mark.parametrize("n", LENGTHS)
def test_kaldi_fbank_equals_torchaudio(ta_kaldi, signals, n):
    for name, x in signals.items():
        x = x[:n]
        ours = kaldi_fbank(torch.as_tensor(x)).double()
        t64 = _ta(ta_kaldi, x, torch.float64, **IMAGEBIND)
        t32 = _ta(ta_kaldi, x, torch.float32, **IMAGEBIND).double()
        assert ours.shape == t64.shape == (1 + (n - 400) // 160, 128)
        assert (ours - t64).abs().max() < 1e-4, name
        assert (ours - t32).abs().max() < 1e-3, name
        # never further from torchaudio's float64 result than its own float32 result is
        assert (ours - t64).abs().max() <= max((t32 - t64).abs().max(), 1e-4), name


def test_imagebind_melspec_equals_waveform2melspec_on_torchaudio(ta_kaldi, signals):
    """ImageBind's waveform2melspec, written out with torchaudio's fbank: mean removed, fbank,
    transposed, padded or cut to 204 frames, then Normalize(-4.268, 9.138)."""
    for name, x in signals.items():
        for n in (16000, 32000, 40123):
            wav = torch.as_tensor(x[:n]).float()
            fb = _ta(ta_kaldi, (wav - wav.mean()).numpy(), torch.float32, **IMAGEBIND).T
            fb = torch.nn.functional.pad(fb, (0, max(0, 204 - fb.shape[1])))[:, :204]
            want = (fb.unsqueeze(0) + 4.268) / 9.138
            got = imagebind_melspec(x[:n])
            assert got.shape == want.shape == (1, 128, 204)
            assert (got - want).abs().max() < 1e-3 / 9.138, (name, n)
            if n == 16000:  # 98 frames: the padded columns are exactly (0 + 4.268) / 9.138
                assert torch.equal(got[..., 98:], want[..., 98:])


def test_beats_povey_fbank_equals_torchaudio_defaults(ta_kaldi, signals):
    for name, x in signals.items():
        x = x[:32000] * 2**15  # BEATs.preprocess scales to int16 range first
        ours = povey_fbank(torch.as_tensor(x)).double()
        t64 = _ta(ta_kaldi, x, torch.float64)  # torchaudio's defaults: povey window, no htk
        t32 = _ta(ta_kaldi, x, torch.float32).double()
        assert (ours - t64).abs().max() < 1e-4, name
        assert (ours - t32).abs().max() < 2e-3, name
