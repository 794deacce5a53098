"""Every shipped YAML config parses, and its header quotes the command that runs it."""

from pathlib import Path

import pytest

from seal.config import RunConfig, from_dict, load_yaml

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_names_its_command(path):
    cfg = from_dict(RunConfig, load_yaml(path), str(path))
    assert cfg.seed == 0
    first = path.read_text().splitlines()[0]
    assert first.startswith("# seal ") and f"--config configs/{path.name}" in first


def test_there_are_configs():
    assert CONFIGS
