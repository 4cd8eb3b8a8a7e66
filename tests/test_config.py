"""The Hydra configs: every experiment preset composes with the script it is for, and the keys both
scripts share come from one place (conf/base.yaml), not from two copies that can drift apart."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import CONF_DIR, compose_config

PRIMARY_CONFIGS = ("search", "final")
# Read by train_search.py and train_final.py alike; they must not differ between the two.
SHARED_KEYS = ("seed", "deterministic", "resume", "device", "distributed", "preemption", "fast", "dataset")
PRESETS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


def preset_touches(preset: str) -> set[str]:
    """The top-level keys a preset sets and the config groups it overrides."""
    raw = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml")
    keys = {key for key in raw if key != "defaults"}
    for entry in raw.get("defaults", []):
        for group in (entry.keys() if isinstance(entry, dict) else []):
            keys.add(group.removeprefix("override ").lstrip("/"))
    return keys


def own_keys() -> dict[str, set[str]]:
    """The keys only one primary config has (search: its strategy and optimisers; final: the genotype
    and its training), taken from the composed configs so a new key is picked up by itself."""
    keys = {name: set(compose_config(name, [])) for name in PRIMARY_CONFIGS}
    return {"search": keys["search"] - keys["final"], "final": keys["final"] - keys["search"]}


def targets(preset: str, keys_of: dict[str, set[str]]) -> list[str]:
    """The primary configs a preset is for: those whose own keys it sets; a preset that sets none
    (a sweep protocol) says which by its name's suffix (``_search``, ``_final``)."""
    touched = preset_touches(preset)
    by_content = [name for name in PRIMARY_CONFIGS if touched & keys_of[name]]
    return by_content or [name for name in PRIMARY_CONFIGS if preset.endswith(f"_{name}")]


def preset_cases() -> list[tuple[str, str]]:
    keys_of = own_keys()
    return [(primary, preset) for preset in PRESETS for primary in targets(preset, keys_of)]


def leaves(node, prefix: str = ""):
    """(dotted path, value) of every leaf of a config node."""
    if not OmegaConf.is_dict(node):
        yield prefix, node
        return
    for key in node:
        yield from leaves(node[key], f"{prefix}.{key}" if prefix else str(key))


def test_every_preset_is_for_some_script():
    keys_of = own_keys()
    assert PRESETS
    assert [preset for preset in PRESETS if not targets(preset, keys_of)] == []


@pytest.mark.parametrize("primary, preset", preset_cases())
def test_preset_composes_with_its_script_and_overrides_the_shared_keys(primary, preset):
    cfg = compose_config(primary, [f"experiment={preset}"])
    raw = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml")
    set_by_preset = OmegaConf.masked_copy(raw, [key for key in SHARED_KEYS if key in raw])
    for path, value in leaves(set_by_preset):
        assert OmegaConf.select(cfg, path) == value, path    # the preset wins over conf/base.yaml
    for key in own_keys()[primary]:
        assert key in cfg, key


def test_shared_keys_are_the_same_in_search_and_final():
    search, final = (OmegaConf.to_container(compose_config(name, [])) for name in PRIMARY_CONFIGS)
    for key in SHARED_KEYS:
        assert search[key] == final[key], key


@pytest.mark.parametrize("key, value", [("seed", 7), ("resume", "auto"), ("device", "cpu")])
def test_command_line_overrides_the_shared_keys(key, value):
    for name in PRIMARY_CONFIGS:
        assert compose_config(name, [f"{key}={value}"])[key] == value


def test_each_script_writes_its_runs_under_its_own_directory():
    dirs = {}
    for name in PRIMARY_CONFIGS:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            hydra = compose(config_name=name, overrides=[], return_hydra_config=True).hydra
        dirs[name] = (Path(hydra.run.dir), Path(hydra.sweep.dir))
        assert all(name in directory.parts for directory in dirs[name]), dirs[name]
    assert dirs["search"][0].parent != dirs["final"][0].parent
    assert dirs["search"][1].parent != dirs["final"][1].parent
