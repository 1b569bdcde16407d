"""Runner tasks. Each is a plain function `(cfg, ctx) -> TaskResult`, registered here once with
the config sections and component slots its outputs depend on: that declaration, with the
components' own identities, is what `identity.json` records and `eald-report` groups runs by."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from eald.registry import REGISTRY, Component

_SPLIT = ("dataset", "protocol", "limit")  # which videos a run covers
_SAMPLE = ("modality", "sequence", "sampling")  # what is read of each video

TASKS: dict[str, Component] = {
    c.name: REGISTRY.register(c)
    for c in (
        Component("task", "zeroshot", "eald.tasks.zeroshot:run_zeroshot",
                  uses=(*_SPLIT, *_SAMPLE, "nfbl_text", "prompt"), slots=("backbone", "judge")),
        Component("task", "probe", "eald.tasks.probe:run_probe", uses=(*_SPLIT, *_SAMPLE),
                  slots=("baseline",)),
        Component("task", "deid", "eald.tasks.deid:run_deid", uses=("dataset", "limit", "deid")),
        Component("task", "audit", "eald.tasks.audit:run_audit",
                  uses=("dataset", "deid", "audit")),
        Component("task", "check", "eald.tasks.check:run_check", uses=_SPLIT),
    )
}  # fmt: skip


IDENTITY_VERSION = 1


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What defines this run's setting: the task, the config sections it declares it reads, and
    the identities its components declare (weights fingerprints, decoding, code versions). The
    seed is not in it (reports group seeds of one setting). Written as identity.json."""
    task = TASKS[cfg.task.value]
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    # A slot the task builds must be filled: `backbone=none` fails here, naming the slot.
    comps = {slot: REGISTRY.identity(slot, cfg.get(slot)) for slot in task.slots}
    return {"version": IDENTITY_VERSION, "task": task.name,
            "config": {k: plain.get(k) for k in task.uses}, "components": comps}  # fmt: skip
