"""Checkpoint conversion shared by every ported model (ImageBind, Video-LLaMA, PandaGPT).

The original checkpoints are loaded as published and renamed into our modules' key layout by an
explicit `KeyMap`. The loader is deliberately strict: every original key must be either mapped or
listed as knowingly ignored, and every key of our module must be filled (unless explicitly
allowed to stay missing). A silent partial load would give a model that runs and produces
plausible-looking garbage, which is the worst failure mode for a port.

Pipeline: `load_checkpoint` -> `apply_keymap` (with optional `Merge`/`Apply` tensor transforms)
-> `load_into`; `load_converted` chains the last two and fails on unexpected keys.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "Apply",
    "CheckpointError",
    "KeyMap",
    "LoadReport",
    "Merge",
    "apply_keymap",
    "load_checkpoint",
    "load_converted",
    "load_into",
]

log = logging.getLogger("eald.convert")

# Wrapper keys training frameworks put around a state dict, tried in this order.
WRAPPER_KEYS = ("model", "state_dict", "module")
MAX_LISTED = 20  # keys named in one error message; the rest are counted

# A rule is (regex, replacement) applied with re.fullmatch + Match.expand, or a callable that
# returns the new key, or None when it does not apply.
Rule = tuple[str, str] | Callable[[str], str | None]


class CheckpointError(RuntimeError):
    """A checkpoint does not match the module it is loaded into."""


def _listing(title: str, keys: Sequence[str]) -> str:
    shown = "\n  ".join(keys[:MAX_LISTED])
    more = f"\n  ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return f"{len(keys)} {title}:\n  {shown}{more}"


@dataclass(frozen=True)
class KeyMap:
    """Ordered renaming rules from original checkpoint keys to our module's keys.

    The first matching rule wins. `ignore` regexes (full match) name keys that are known and
    deliberately unused; they are checked before the rules so an ignore can carve out a subset
    that a broad rule would otherwise map. A key matched by neither is *unexpected*.
    """

    rules: Sequence[Rule] = ()
    ignore: Sequence[str] = ()
    _compiled: list[tuple[re.Pattern[str], str] | Callable[[str], str | None]] = field(
        init=False, repr=False, compare=False
    )
    _ignore: list[re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Stored as tuples and compiled once (checkpoints have thousands of keys); frozen so a
        # shared module-level map such as IMAGEBIND_KEYMAP cannot drift from its compiled form.
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        compiled = [(re.compile(r[0]), r[1]) if isinstance(r, tuple) else r for r in self.rules]
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_ignore", [re.compile(p) for p in self.ignore])

    def is_ignored(self, key: str) -> bool:
        return any(p.fullmatch(key) for p in self._ignore)

    def target(self, key: str) -> str | None:
        """Our key for an original key, or None when no rule maps it (ignores not consulted)."""
        for rule in self._compiled:
            if isinstance(rule, tuple):
                m = rule[0].fullmatch(key)
                if m:
                    return m.expand(rule[1])
            else:
                out = rule(key)
                if out is not None:
                    return out
        return None

    def __add__(self, other: KeyMap) -> KeyMap:
        return KeyMap(rules=[*self.rules, *other.rules], ignore=[*self.ignore, *other.ignore])


@dataclass(frozen=True)
class Merge:
    """Combine several ORIGINAL keys into one key (still in the original namespace).

    `pattern` full-matches the first source key; `others` are templates (Match.expand syntax,
    e.g. r"\\1.v_bias") naming the remaining sources from that match; `target` names the result,
    which then goes through the KeyMap like any other key. `fn` receives the source tensors in
    order. Example (EVA ViT q/v biases into one qkv bias):
    Merge(r"(.*)\\.q_bias", (r"\\1.v_bias",), r"\\1.qkv.bias",
          lambda q, v: torch.cat([q, torch.zeros_like(v), v]))
    """

    pattern: str
    others: tuple[str, ...]
    target: str
    fn: Callable[..., Tensor]


@dataclass(frozen=True)
class Apply:
    """Transform the tensor of every original key that full-matches `pattern` (name kept)."""

    pattern: str
    fn: Callable[[Tensor], Tensor]


Transform = Merge | Apply


def _run_transforms(sd: Mapping[str, Tensor], transforms: Sequence[Transform]) -> dict[str, Tensor]:
    out = dict(sd)
    for t in transforms:
        rx = re.compile(t.pattern)
        if isinstance(t, Apply):
            for key in [k for k in out if rx.fullmatch(k)]:
                out[key] = t.fn(out[key])
            continue
        for key in [k for k in out if rx.fullmatch(k)]:
            m = rx.fullmatch(key)
            assert m is not None
            sources = [key, *(m.expand(o) for o in t.others)]
            absent = [s for s in sources if s not in out]
            if absent:
                raise CheckpointError(f"merge into {m.expand(t.target)!r}: missing {absent}")
            tensors = [out.pop(s) for s in sources]
            target = m.expand(t.target)
            if target in out:
                raise CheckpointError(f"merge target {target!r} already exists in checkpoint")
            out[target] = t.fn(*tensors)
    return out


def apply_keymap(
    sd: Mapping[str, Tensor],
    keymap: KeyMap,
    transforms: Sequence[Transform] = (),
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename `sd` into our layout. Returns (converted, unexpected original keys).

    Transforms run first, on original names, so merged keys are renamed by the same KeyMap.
    Two original keys landing on one target is a bug in the map and raises immediately.
    """
    src = _run_transforms(sd, transforms)
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    for key, tensor in src.items():
        if keymap.is_ignored(key):
            continue
        new = keymap.target(key)
        if new is None:
            unexpected.append(key)
            continue
        if new in out:
            raise CheckpointError(f"keys {origin[new]!r} and {key!r} both map to {new!r}")
        out[new] = tensor
        origin[new] = key
    return out, unexpected


def _unwrap(obj: object, name: str) -> dict[str, Tensor]:
    wrappers: list[str] = []
    # Unwrap while the object is a container rather than a state dict (nested wrappers exist,
    # e.g. {"state_dict": {"module": ...}} from DDP + Lightning).
    while isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            bad = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
            raise CheckpointError(
                f"{name}: not a state dict; non-tensor entries {bad[:MAX_LISTED]}"
            )
        wrappers.append(key)
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name}: expected a state dict, got {type(obj).__name__}")
    if wrappers:
        log.info("%s: unwrapped state dict from %s", name, "".join(f"[{w!r}]" for w in wrappers))
    return dict(obj)


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Load a checkpoint file onto the CPU as a flat {key: tensor} state dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix not in {".pth", ".pt", ".bin", ".ckpt"}:
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Training checkpoints (Video-LLaMA's {"model", "config", ...}) pickle arbitrary objects
        # next to the weights; those need full unpickling, which executes code from the file.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(
            f"{path}: weights_only load failed ({first}); loading with weights_only=False. "
            "Only do this for files from a trusted source.",
            stacklevel=2,
        )
        obj = torch.load(path, map_location="cpu", weights_only=False)
    return _unwrap(obj, path.name)


@dataclass(frozen=True)
class LoadReport:
    """Outcome of a load: `loaded` keys, allowed `missing` keys, `unexpected` keys (only ever
    non-empty for non-raising callers), and original keys `ignored` by the KeyMap."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    loaded: tuple[str, ...]
    ignored: tuple[str, ...] = ()

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; {len(self.missing)} missing (allowed); "
            f"{len(self.unexpected)} unexpected; {len(self.ignored)} ignored"
        )


def load_into(
    module: nn.Module,
    sd: Mapping[str, Tensor],
    *,
    allow_missing: Iterable[str] = (),
    assign: bool = False,
) -> LoadReport:
    """Strictly load an already-converted state dict into `module`.

    Raises CheckpointError naming unexpected keys, missing keys not full-matching any
    `allow_missing` regex, and shape mismatches (both shapes). `assign=True` adopts the
    checkpoint tensors instead of copying (for modules built on the meta device); tensors that
    stay on meta afterwards are an error.
    """
    expected = module.state_dict()
    allowed = [re.compile(p) for p in allow_missing]
    unexpected = sorted(k for k in sd if k not in expected)
    missing = sorted(k for k in expected if k not in sd)
    bad_missing = [k for k in missing if not any(p.fullmatch(k) for p in allowed)]
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(sd)
        if k in expected and sd[k].shape != expected[k].shape
    ]
    problems = [
        _listing(title, keys)
        for title, keys in (
            ("unexpected keys", unexpected),
            ("missing keys", bad_missing),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"cannot load into {type(module).__name__}: " + "\n".join(problems))
    module.load_state_dict(dict(sd), strict=False, assign=assign)
    if assign:
        on_meta = [k for k, v in module.state_dict().items() if v.is_meta]
        if on_meta:
            raise CheckpointError(_listing("tensors left uninitialised (meta)", on_meta))
    return LoadReport(missing=tuple(missing), unexpected=(), loaded=tuple(sorted(sd)))


def load_converted(
    module: nn.Module,
    sd: Mapping[str, Tensor],
    keymap: KeyMap,
    *,
    transforms: Sequence[Transform] = (),
    allow_missing: Iterable[str] = (),
    assign: bool = False,
) -> LoadReport:
    """`apply_keymap` then `load_into`; unexpected original keys raise CheckpointError."""
    converted, unexpected = apply_keymap(sd, keymap, transforms)
    if unexpected:
        raise CheckpointError(
            "original keys neither mapped nor ignored by the key map — "
            + _listing("unexpected keys", unexpected)
        )
    report = load_into(module, converted, allow_missing=allow_missing, assign=assign)
    ignored = tuple(sorted(k for k in sd if keymap.is_ignored(k)))
    return LoadReport(report.missing, report.unexpected, report.loaded, ignored)
