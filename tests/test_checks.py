"""The config checks the workflow runs before any job, as unit tests: the schema (Snakemake's
validator, which also fills the defaults) and then varprune.workflow.checks, on the tiny test
config with one change each. tests/test_workflow_data.py proves the workflow runs both."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.utils import update_config, validate

from varprune.workflow.checks import ConfigError, check_config

from .workflow_helpers import REPO, TINY_CONFIG

SCHEMA = str(REPO / "config" / "schema.yaml")


def _base() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    update_config(config, yaml.safe_load(TINY_CONFIG.read_text(encoding="utf-8")))
    return config


BASE = _base()


def checked(**changes) -> dict:
    """The tiny config with dotted keys changed, validated by the schema and checked."""
    config = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    validate(config, SCHEMA)
    check_config(config)
    return config


def test_the_tiny_and_the_default_configs_pass():
    checked()
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    validate(default, SCHEMA)
    check_config(default)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"data.source": "foo"}, "source"),
        ({"synthetic.patients": -3}, "patients"),
        ({"model.arch": "swin"}, "arch"),
        ({"run": ".."}, "run"),
        ({"run": "../elsewhere"}, "run"),
        ({"pruning.rate_max": 1.0}, "rate_max"),
        ({"pruning.criterion": "fisher"}, "criterion"),
        ({"pruning.cycle_targets": []}, "cycle_targets"),
    ],
)
def test_the_schema_refuses_a_wrong_type_or_value_naming_the_key(change, key):
    with pytest.raises(Exception, match=key):
        checked(**change)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"preprocess.window": [400, -100]}, "preprocess.window: low (400) must be below high (-100)"),
        ({"synthetic.slices_min": 30, "synthetic.slices_max": 20},
         "synthetic.slices_min: 30 > synthetic.slices_max 20"),
        ({"data.patients": [1, 9]}, "data.patients: [9] exceed synthetic.patients (4)"),
        ({"data.source": "ircadb", "data.patients": [1, 21]},
         "data.patients: 3D-IRCADb-01 has patients 1-20, not [21]"),
        ({"data.archive": "3Dircadb1.zip"},
         "data.archive: 3Dircadb1.zip is set but data.source is synthetic"),
        ({"data.source": "ircadb", "data.archive": "/no/such/3Dircadb1.zip"},
         "data.archive: /no/such/3Dircadb1.zip: no such file"),
        ({"data.source": "nifti"}, "data.nifti.root: data.source nifti needs the dataset folder"),
        ({"data.source": "nifti", "data.patients": [1, 2]},
         "data.patients: [1, 2] is set but data.source is nifti"),
        ({"model.arch": "unetr", "model.patch": 8}, "model: "),
        ({"model.arch": "setr", "model.patch": 12}, "model: "),
        ({"model.arch": "setr", "model.patch": 16, "model.head_channels": [8, 8, 8]}, "model: "),
        ({"model.arch": "setr", "model.head_layers": [12]}, "model: "),
        ({"pruning.methods": ["variable", "magic"]}, "pruning.methods: unknown ['magic']"),
        ({"resources.rules": {"trian": {"runtime": 5}}}, "resources.rules: no rule named trian"),
        ({"pruning.cycle_targets": [0.05, 0.05]}, "pruning: "),
        ({"pruning.cycle_targets": [0.04, 0.999]}, "pruning: "),
        ({"pruning.rate_min": 0.6, "pruning.rate_max": 0.5}, "pruning: "),
        ({"pruning.schedule": "guarded", "pruning.guard": {"step": 0.02, "min_step": 0.05}},
         "pruning.guard: pruning.guard.min_step"),
        ({"pruning.schedule": "guarded", "pruning.guard": {"start": 0.99}},
         "pruning.guard.start: 0.99 is more than one cycle can remove"),
        ({"pruning.schedule": "guarded", "export.quantize": "int8"},
         "export.quantize: INT8 is built for pruning.schedule targets only"),
    ],
)
def test_a_relation_the_schema_cannot_express_is_refused_naming_the_key(change, message):
    with pytest.raises(ConfigError) as caught:
        checked(**change)
    assert str(caught.value).startswith("Invalid config: ") and message in str(caught.value)


def test_cluster_nodes_do_not_need_the_linked_archive():
    config = copy.deepcopy(BASE)
    config["data"].update(source="ircadb", archive="/no/such/3Dircadb1.zip")
    validate(config, SCHEMA)
    check_config(config, archive_must_exist=False)
    with pytest.raises(ConfigError, match="no such file"):
        check_config(config)
