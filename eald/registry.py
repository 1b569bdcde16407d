"""One registry of eald's components: backbones, judges, baselines, tasks and face detectors.

A component is declared once, with its name and kind and three lazy paths ("module:attr", imported
only when used, as lmms-eval's registry_v2 and torchtune's `_component_` do):
- `target`: the class (or task function) to build;
- `schema`: its config dataclass, in a module that imports no torch, so validating a config is
  cheap and checks every key of the chosen option;
- `identity`: a function of the config alone that returns everything that changes an output
  (weights fingerprint, decoding, code version). Caches and `eald-report` use it, so a cached run
  never loads a model.

Backbones, judges and baselines declare themselves in their config file (`eald/conf/<kind>/
<name>.yaml`: `_component_`, `_schema_`, `_identity_`), so a new one is one Python file plus one
YAML file (CONTRIBUTING.md). Tasks and face detectors are fixed parts of eald, registered in code
(`eald/tasks/__init__.py`, `eald/deid/settings.py`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parent / "conf"  # the packaged config tree
KINDS = ("backbone", "judge", "baseline", "task", "face_detector")
SLOTS = ("backbone", "judge", "baseline")  # config groups whose options are components
META = ("_component_", "_schema_", "_identity_")  # keys a component's YAML declares itself with


class RegistryError(ValueError):
    """An unknown or badly declared component, or a config its schema rejects; names the key."""


def load(path: str) -> Any:
    """Import "package.module:attr" (dots after the colon walk attributes)."""
    module, _, attr = path.partition(":")
    if not attr:
        raise RegistryError(f"{path!r}: expected 'module:attribute'")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as err:
        raise RegistryError(f"{path!r}: cannot import {module} ({err})") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"{path!r}: {module} has no {attr}")
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    target: str
    schema: str | None = None
    identity: str | None = None
    source: str = "code"  # where it was declared, for error messages
    uses: tuple[str, ...] = ()  # tasks: the config sections their outputs depend on
    slots: tuple[str, ...] = ()  # tasks: the component slots they build

    def build(self, conf: Any, **kwargs: Any) -> Any:
        return load(self.target)(conf, **kwargs)

    def identity_of(self, conf: Any) -> dict[str, Any]:
        if self.identity is None:
            raise RegistryError(f"{self.kind} {self.name!r} ({self.source}) declares no identity")
        return load(self.identity)(conf)

    def typed(self, conf: Any, key: str) -> DictConfig:
        """`conf` checked against the schema: unknown keys and wrong types fail, naming
        `key.<field>`; missing keys take the schema's defaults."""
        body = {k: v for k, v in _container(conf).items() if k not in META}
        if self.schema is None:
            return OmegaConf.create(body)
        try:
            node = OmegaConf.merge(OmegaConf.structured(load(self.schema)), body)
        except OmegaConfBaseException as err:
            field = f"{key}.{err.key}" if getattr(err, "key", None) else key
            raise RegistryError(f"{field}: {err.msg if hasattr(err, 'msg') else err} "
                                f"({self.kind} {self.name!r}, schema {self.schema})") from None  # fmt: skip
        missing = OmegaConf.missing_keys(node)
        if missing:
            raise RegistryError(f"{key}: required keys not set: {sorted(missing)}")
        OmegaConf.set_struct(node, False)  # the declaration travels with the typed node
        for k in META:
            if conf.get(k) is not None:
                node[k] = conf.get(k)
        OmegaConf.set_struct(node, True)
        return node


def _field(conf: Any, key: str) -> Any:
    """A key of a config node or mapping, or an attribute of a plain object; None if absent."""
    if conf is None:
        return None
    return conf.get(key) if hasattr(conf, "get") else getattr(conf, key, None)


def _container(conf: Any) -> dict[str, Any]:
    if OmegaConf.is_config(conf):
        return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]
    return dict(conf)


class Registry:
    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Component] = {}
        self._discovered = False

    def discover(self, conf_dir: Path = CONF_DIR) -> None:
        """Register every option of the packaged tree's component groups under its option name
        (`backbone=video_llama_tiny` -> "video_llama_tiny"), for lookups by name."""
        for slot in SLOTS:
            for path in sorted((conf_dir / slot).glob("*.yaml")):
                node = yaml.safe_load(path.read_text()) or {}
                if node.get("_component_"):
                    self.register(Component(slot, path.stem, node["_component_"],
                                            node.get("_schema_"), node.get("_identity_"),
                                            f"{slot}/{path.name}"))  # fmt: skip
        self._discovered = True

    def register(self, component: Component) -> Component:
        if component.kind not in KINDS:
            raise RegistryError(f"{component.source}: kind {component.kind!r} not in {KINDS}")
        key = (component.kind, component.name)
        old = self._items.get(key)
        if old is not None and old != component:
            raise RegistryError(f"{component.kind} {component.name!r} is declared twice: "
                                f"{old.source} and {component.source}")  # fmt: skip
        self._items[key] = component
        return component

    def names(self, kind: str) -> list[str]:
        if not self._discovered and kind in SLOTS:
            self.discover()
        return sorted(n for k, n in self._items if k == kind)

    def get(self, kind: str, name: str) -> Component:
        if (kind, name) not in self._items and not self._discovered and kind in SLOTS:
            self.discover()
        try:
            return self._items[(kind, name)]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none registered"
            raise RegistryError(f"{kind} {name!r} is not registered ({known})") from None

    def of(self, kind: str, conf: Any) -> Component:
        """The component a config node names: the one it declares (`_component_`, as every
        option's YAML does), else the registered option of that name."""
        name, target = _field(conf, "name"), _field(conf, "_component_")
        if not name or name == "none":
            options = " | ".join(self.names(kind)) or "none registered"
            raise RegistryError(f"{kind}=none: this task needs a {kind} ({kind}={options})")
        if target is None:
            return self.get(kind, name)
        return Component(kind, name, target, _field(conf, "_schema_"), _field(conf, "_identity_"),
                         f"the {kind} config")  # fmt: skip

    def option(self, kind: str, name: str, **overrides: Any) -> DictConfig:
        """The packaged `<kind>/<name>.yaml` node with `overrides`, typed by its schema (for
        code and tests that build a component without composing a whole config)."""
        path = CONF_DIR / kind / f"{name}.yaml"
        if not path.is_file():
            raise RegistryError(f"{kind}={name}: no {path}")
        node = OmegaConf.merge(OmegaConf.load(path), overrides)
        return self.of(kind, node).typed(node, kind)

    def build(self, kind: str, conf: Any, **kwargs: Any) -> Any:
        return self.of(kind, conf).build(conf, **kwargs)

    def identity(self, kind: str, conf: Any) -> dict[str, Any]:
        return self.of(kind, conf).identity_of(conf)


REGISTRY = Registry()


class Lazy:
    """A component built on first use: a run whose every result is cached never builds (or
    loads) it. `prepare` may rewrite the config first (e.g. `device: auto` -> a device)."""

    def __init__(self, kind: str, conf: Any, prepare: Callable[[Any], Any] | None = None,
                 check: Callable[[Any], None] | None = None) -> None:  # fmt: skip
        self.kind, self.conf, self._prepare, self._check = kind, conf, prepare, check
        self._obj: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._obj is not None

    def get(self) -> Any:
        with self._lock:  # pipeline threads may ask at once: build once
            return self._get()

    def _get(self) -> Any:
        if self._obj is None:
            conf = self._prepare(self.conf) if self._prepare else self.conf
            try:
                obj = REGISTRY.build(self.kind, conf)
            except RegistryError:
                raise
            except ValueError as err:  # a bad setting found while building, e.g. an unset key
                raise RegistryError(str(err)) from err
            if self._check:
                self._check(obj)
            self._obj = obj
        return self._obj
