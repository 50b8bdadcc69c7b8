"""The one way varprune merges config files: as `snakemake --configfile` does, recursively
(snakemake.utils.update_config), so that a test, a benchmark and a preset read the same config
the workflow runs with."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
DEFAULTS = REPO / "config" / "config.yaml"


def merged_config(*files: str | os.PathLike, defaults: str | os.PathLike = DEFAULTS) -> dict:
    """config/config.yaml with each file laid over it in turn, nested sections merged key by key."""
    from snakemake.utils import update_config

    config = yaml.safe_load(Path(defaults).read_text(encoding="utf-8"))
    for path in files:
        update_config(config, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    return config
