"""The config tree: every group option composes; typos and out-of-range values fail at start-up
naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from eald.config import ConfigError, register_configs, validate
from tests.conftest import REPO, run_cli

CONF = REPO / "eald" / "conf"
register_configs()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=False)


GROUPS = ["dataset", "protocol", "modality", "sequence", "backbone", "judge", "baseline", "logger"]


def test_all_design_groups_exist():
    for g in [*GROUPS, "experiment", "hydra/launcher"]:
        assert (CONF / g).is_dir(), g
    assert _options("modality") == sorted(["v", "a", "n", "va", "vn", "an", "van"])
    assert {"joblib", "submitit_slurm"} <= set(_options("hydra/launcher"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda x: str(x)
)
def test_every_option_composes(group, option):
    cfg = _compose(f"{group}={option}", "dataset.root=/x")
    validate(cfg)
    if group == "dataset":  # a dataset option is its files' place and layout
        assert cfg.dataset.root == "/x" and cfg.dataset.videos_dir == "videos"
        return
    # `<name>_tiny` options run the same component at tiny sizes.
    assert OmegaConf.select(cfg, f"{group}.name") == option.removesuffix("_tiny")


@pytest.mark.parametrize("option", _options("experiment"))
def test_every_experiment_composes(option):
    validate(_compose(f"experiment={option}", "dataset.root=/x"))


@pytest.mark.parametrize("option", _options("method"))
def test_every_method_composes(option):
    cfg = _compose(f"method={option}", "dataset.root=/x")
    validate(cfg)
    kind, component = option.split("_", 1)
    if kind == "probe":
        assert (cfg.task.value, cfg.baseline.name) == ("probe", component)
    else:
        assert (cfg.task.value, cfg.backbone.name) == ("zeroshot", component)


def test_hydra_launchers_compose():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for opt in ("joblib", "submitit_slurm"):
            cfg = compose("config", overrides=[f"hydra/launcher={opt}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


def test_modality_switches():
    for opt in _options("modality"):
        m = _compose(f"modality={opt}").modality
        assert (m.video, m.audio, m.nfbl) == ("v" in opt, "a" in opt, "n" in opt)


def test_part_protocol_is_the_papers():
    """The YAML is the only copy of the paper's lists (supp. section 2): 72 + 74 distinct ids of
    the 275 videos, ascending, beginning and ending as printed there."""
    p = _compose("protocol=part").protocol
    train, test = [int(i) for i in p.train], [int(i) for i in p.test]
    assert (len(train), len(test)) == (72, 74) and not set(train) & set(test)
    assert train == sorted(set(train)) and test == sorted(set(test))
    assert 0 <= min(train + test) and max(train + test) <= 274
    assert (train[:3], train[-3:], test[:3], test[-3:]) == (
        [2, 7, 10],
        [269, 272, 274],
        [0, 1, 6],
        [268, 270, 273],
    )


@pytest.mark.parametrize(
    "override,key",
    [
        ("sequence.fraction=0", "sequence.fraction"),
        ("sequence.fraction=1.5", "sequence.fraction"),
        ("sampling.num_frames=0", "sampling.num_frames"),
        ("sampling.audio_clip_s=-1", "sampling.audio_clip_s"),
        ("protocol.split=dev", "protocol.split"),
        ("seed=-1", "seed"),
        ("deid.face.stride=16", "deid.face.max_lost"),
        ("deid.face.detectors=[yolo]", "deid.face.detectors"),
        ("deid.face.detectors=[]", "deid.face.detectors"),
        ("deid.face.verify_with=[cnn,yolo]", "deid.face.verify_with"),
        ("deid.face.min_face_px=0", "deid.face.min_face_px"),
        ("deid.face.on_no_faces=maybe", "deid.face.on_no_faces"),
        ("deid.face.verify_stride=0", "deid.face.verify_stride"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(override))


def test_unknown_key_and_bad_type_fail_at_compose():
    with pytest.raises(ConfigCompositionException, match="fractoin"):
        _compose("sequence.fractoin=0.5")
    with pytest.raises(ConfigCompositionException, match="num_frames"):
        _compose("sampling.num_frames=many")
    with pytest.raises(ConfigCompositionException, match="task"):
        _compose("task=train")


def test_cli_reports_bad_value_without_traceback(tmp_path: Path):
    r = run_cli("sequence.fraction=1.5", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode != 0
    assert "sequence.fraction=1.5" in r.stderr and "Traceback" not in r.stderr


def test_experiment_values_override_the_primary_config():
    cfg = _compose("experiment=smoke")
    assert (cfg.limit, cfg.sampling.num_frames, cfg.sampling.audio_clips) == (2, 8, 2)
    cfg = _compose("experiment=supp_table1_sequence", "backbone=tiny")
    assert cfg.backbone.name == "tiny" and cfg.modality.name == "van"


def test_local_group_gives_this_machines_paths(tmp_path, monkeypatch):
    """~/.config/eald/local/default.yaml is merged when present (paths written once) and its
    absence is no error; the components read `paths`."""
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="dataset.root"):
        validate(_compose("dataset=eald"))  # no local file, no root: named at start-up
    local = tmp_path / ".config" / "eald" / "local"
    local.mkdir(parents=True)
    (local / "default.yaml").write_text(
        "# @package _global_\npaths:\n  eald_root: /data/EALD\n  eva_vit: /w/eva_vit_g.pth\n"
        "  tsm: /w/tsm.pth\n"
    )
    cfg = _compose("dataset=eald", "backbone=video_llama", "baseline=tsm")
    assert cfg.dataset.root == "/data/EALD"
    assert cfg.backbone.eva_vit_path == "/w/eva_vit_g.pth" and cfg.backbone.llama_path is None
    assert cfg.baseline.checkpoint == "/w/tsm.pth"
    assert _compose("dataset=eald", "dataset.root=/cli").dataset.root == "/cli"  # CLI still wins
    assert _compose("dataset=demo").dataset.root == "data/demo"  # other datasets untouched
