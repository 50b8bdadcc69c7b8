"""One source for defaults: config/config.yaml, the schema's defaults and the library's dataclasses agree."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from varprune.app.cli import build_parser
from varprune.app.configdocs import load_schema
from varprune.data.datasets import AugmentSpec
from varprune.data.preprocess import PreprocessSpec
from varprune.data.synthetic import SyntheticSpec
from varprune.engine.train import TrainSettings
from varprune.model.spec import ModelSpec
from varprune.pruning.cycle import CycleSettings
from varprune.pruning.guard import GuardSettings
from varprune.pruning.sequence import SequenceSettings
from varprune.report.settings import ReportSettings
from varprune.workflow.resources import Calibration

from .workflow_helpers import REPO

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
SCHEMA = load_schema(REPO / "config" / "schema.yaml")  # train and finetune's $defs merged in


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("instance", "section"), [
    (TrainSettings(), CONFIG["train"]),
    (AugmentSpec(), CONFIG["train"]["augment"]),
    (SequenceSettings(), CONFIG["pruning"]),
    (CycleSettings(target=0.5), CONFIG["pruning"]),
    (GuardSettings(), CONFIG["pruning"]["guard"]),
    (ReportSettings(), CONFIG["report"]),
    (SyntheticSpec(), CONFIG["synthetic"]),
    (PreprocessSpec(), CONFIG["preprocess"]),
    (Calibration(), CONFIG["resources"]),
    (ModelSpec(), {**CONFIG["model"], "input_size": CONFIG["preprocess"]["input_size"]}),
], ids=["train", "augment", "pruning-sequence", "pruning-cycle", "pruning-guard", "report", "synthetic",
        "preprocess", "resources", "model"])
def test_dataclass_defaults_are_the_config_defaults(instance, section):
    compared = 0
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if field.name in section and not dataclasses.is_dataclass(value):
            assert _plain(value) == section[field.name], field.name
            compared += 1
    assert compared >= 2


def _schema_defaults(schema: dict, config: dict, path: str = ""):
    for key, node in (schema.get("properties") or {}).items():
        if key not in config:
            continue
        if isinstance(config[key], dict):
            yield from _schema_defaults(node, config[key], f"{path}{key}.")
        elif "default" in node:
            yield f"{path}{key}", node["default"], config[key]


def test_schema_defaults_are_the_config_values():
    found = list(_schema_defaults(SCHEMA, CONFIG))
    assert len(found) > 50
    assert [(key, default) for key, default, value in found if default != value] == []


def test_the_synthesize_command_defaults_to_the_default_cohort():
    args = build_parser().parse_args(["synthesize", "out.zip"])
    assert {k: getattr(args, k) for k in CONFIG["synthetic"]} == CONFIG["synthetic"]


def test_the_download_command_defaults_to_the_configured_url():
    args = build_parser().parse_args(["download", "out.zip"])
    assert args.url == CONFIG["data"]["url"] == SCHEMA["properties"]["data"]["properties"]["url"]["default"]


def test_a_checkpoint_spec_written_before_a_key_existed_reads_it_as_it_was_written():
    from varprune.model.spec import LEGACY_SPEC

    old = ModelSpec.from_dict({"hidden": 384, "ffn": 1536, "heads": 6, "layers": []})
    assert old.arch == LEGACY_SPEC["arch"] == "unetr" and old.patch == 16
    assert ModelSpec.from_dict(ModelSpec().to_dict()) == ModelSpec()


def test_train_and_finetune_share_one_definition_and_each_gets_its_defaults():
    """$defs/optimisation holds the keys both sections share; Snakemake's validator fills them
    through the reference, and an unknown key is still refused."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    raw = yaml.safe_load((REPO / "config" / "schema.yaml").read_text(encoding="utf-8"))
    shared = raw["$defs"]["optimisation"]["properties"]
    assert {"batch_size", "warmup", "augment"} <= set(shared)
    assert not set(shared) & set(raw["properties"]["train"]["properties"])
    config = {"train": {"epochs": 3}, "finetune": {}}
    validate(config, str(REPO / "config" / "schema.yaml"))
    for section in ("train", "finetune"):
        assert config[section]["batch_size"] == CONFIG[section]["batch_size"]
        assert config[section]["augment"] == CONFIG[section]["augment"]
    assert (config["train"]["epochs"], config["finetune"]["epochs"]) == (3, CONFIG["finetune"]["epochs"])
    with pytest.raises(WorkflowError):
        validate({"finetune": {"batch_sise": 4}}, str(REPO / "config" / "schema.yaml"))
