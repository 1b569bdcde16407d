"""One meaning of `device: auto` for every component: the GPU when there is one."""

from __future__ import annotations


def resolve_device(device: str | None) -> str:
    """ "auto" (or unset) -> "cuda" when a CUDA device is available, else "cpu"; any other name
    is returned as given. torch is imported only here, when a device is actually resolved."""
    if device not in (None, "", "auto"):
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
