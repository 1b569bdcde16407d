"""Make mmaction2 1.2.0 (PyPI wheel) importable and offline-safe, without touching site-packages.

The published wheel does not import as it is; every workaround lives here, applied once by
`import_mmaction()` inside our own process:

1. `mmaction/models/localizers/drn` is missing from the wheel, yet `localizers/__init__` imports
   `DRN` from it: we register a stub package in `sys.modules` first (DRN is a temporal grounding
   model, unused by the recognizers; building it raises a clear error).
2. `mmaction.models.multimodal.vindlu` breaks with current transformers (it imports removed
   internals): we flip mmaction's own `WITH_MULTIMODAL` switch off before `mmaction.models` loads,
   so mmaction registers its placeholder classes instead, exactly as without transformers.
3. torch >= 2.6 defaults `torch.load(weights_only=True)`, and mmengine's checkpoint loader pickles
   more than tensors (`meta` with numpy/mmengine objects): we give mmengine's checkpoint module a
   `torch` whose `load` defaults to `weights_only=False`. Scoped: the global `torch.load` keeps its
   safe default, only mmengine's own loader (trusted OpenMMLab checkpoints) sees the old one.
4. `ResNetTSM` and `SwinTransformer3D` default to `pretrained2d=True` and their `init_weights()`
   then inflate ImageNet weights even when `pretrained=None`, which downloads (or fails offline):
   when `pretrained` is None we skip that branch and fall back to the plain random init.

5. `mmaction.utils.dependency` imports the undeclared `importlib_metadata` backport: aliased to
   the stdlib `importlib.metadata` when absent.

mmcv-lite 2.1.0 satisfies mmaction's `mmcv<2.2` assertion; the recognizers need no compiled ops.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

_DONE = False
COMPAT_VERSION = "1"  # bump when a workaround changes what the models compute


def _stub_drn() -> None:
    # Only when the wheel really lacks it: a fixed mmaction release must keep its own module.
    import importlib.util
    from pathlib import Path

    # find_spec on a submodule would import its parents (and fail on the missing drn): locate
    # the top-level package only and look at the files.
    spec = importlib.util.find_spec("mmaction")
    assert spec is not None and spec.origin is not None
    if (Path(spec.origin).parent / "models" / "localizers" / "drn").is_dir():
        return

    class DRN:  # noqa: D401 - placeholder with the real class name
        """Placeholder: mmaction2 1.2.0's wheel ships without the DRN localizer."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("DRN is missing from the mmaction2 1.2.0 wheel (stubbed by eald)")

    pkg = types.ModuleType("mmaction.models.localizers.drn")
    pkg.__path__ = []  # a package, so `drn.drn` resolves as a submodule
    mod = types.ModuleType("mmaction.models.localizers.drn.drn")
    mod.DRN = DRN  # type: ignore[attr-defined]
    pkg.drn = mod  # type: ignore[attr-defined]
    sys.modules.setdefault(pkg.__name__, pkg)
    sys.modules.setdefault(mod.__name__, mod)


def _alias_importlib_metadata() -> None:
    # mmaction.utils.dependency imports the `importlib_metadata` backport, which its wheel does
    # not declare; the stdlib module has the two names it uses (distribution,
    # PackageNotFoundError), so alias it when the backport is absent.
    try:
        import importlib_metadata  # noqa: F401
    except ImportError:
        import importlib.metadata

        sys.modules["importlib_metadata"] = importlib.metadata


def _disable_vindlu() -> None:
    import mmaction.utils.dependency as dep

    # Read by models/multimodal/__init__ at import time, so it must be set before that import.
    dep.WITH_MULTIMODAL = False


class _TorchWeightsOnlyFalse(types.ModuleType):
    """`torch` as seen by mmengine's checkpoint module: identical, except `load` defaults to
    weights_only=False (explicit arguments still win)."""

    def __init__(self, torch_mod: types.ModuleType) -> None:
        super().__init__("torch")
        self._torch = torch_mod

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def load(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return self._torch.load(*args, **kwargs)


def _patch_mmengine_load() -> None:
    import mmengine.runner.checkpoint as ckpt
    import torch

    if not isinstance(ckpt.torch, _TorchWeightsOnlyFalse):
        ckpt.torch = _TorchWeightsOnlyFalse(torch)


def _skip_inflate_without_pretrained(cls: type) -> None:
    original = cls.init_weights
    if getattr(original, "_eald_compat", False):
        return

    @functools.wraps(original)
    def init_weights(self: Any) -> None:
        # pretrained2d only means "inflate 2D ImageNet weights"; with nothing to inflate from it
        # must not reach for the default ImageNet URL.
        if self.pretrained is None:
            self.pretrained2d = False
        original(self)

    init_weights._eald_compat = True  # type: ignore[attr-defined]
    cls.init_weights = init_weights


def import_mmaction() -> types.ModuleType:
    """Import mmaction (with its models registered) after applying the workarounds; idempotent.
    Returns the `mmaction` module; `mmaction.registry.MODELS` then builds the recognizers."""
    global _DONE
    if not _DONE:
        _stub_drn()
        _alias_importlib_metadata()
        _disable_vindlu()
        _patch_mmengine_load()
        import mmaction.models  # noqa: F401 - registers the models
        from mmaction.models.backbones.resnet_tsm import ResNetTSM
        from mmaction.models.backbones.swin import SwinTransformer3D

        _skip_inflate_without_pretrained(ResNetTSM)
        _skip_inflate_without_pretrained(SwinTransformer3D)
        # Nested configs (data_preprocessor=ActionDataPreprocessor) resolve through mmengine's
        # default scope; without one they are looked up in mmengine's own registry and fail.
        from mmengine.registry import DefaultScope

        if DefaultScope.get_current_instance() is None:
            DefaultScope.get_instance("eald-mmaction", scope_name="mmaction")
        _DONE = True
    return sys.modules["mmaction"]
