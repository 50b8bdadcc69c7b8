"""The rerun policy (varprune.workflow.params): what a job's params hold decides what Snakemake
reruns after a config edit, so each rule of the policy is pinned here."""

from __future__ import annotations

import copy

import yaml

from varprune.workflow.params import (
    canonical,
    config_slice,
    cycle_slice,
    oneshot_slice,
    scheduled_targets,
    seeded_slice,
    shown_config,
)

from .workflow_helpers import REPO

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))


def test_key_order_does_not_change_a_param():
    shuffled = {"b": [{"y": 1, "x": 2}], "a": {"d": 1, "c": 2}}
    assert list(canonical(shuffled)) == ["a", "b"]
    assert str(canonical(shuffled)) == str(canonical({"a": {"c": 2, "d": 1}, "b": [{"x": 2, "y": 1}]}))
    assert config_slice({"data": {"url": "u", "archive": None}}, "data") == {"archive": None, "url": "u"}


def test_keys_that_change_no_output_are_not_params():
    train = seeded_slice({**CONFIG["train"], "keep_state": True}, None)
    assert "keep_state" not in train
    finetune = seeded_slice(CONFIG["finetune"], None)
    assert "distill" not in finetune  # off (weight 0) by default
    on = copy.deepcopy(CONFIG["finetune"])
    on["distill"]["weight"] = 1.0
    assert seeded_slice(on, None)["distill"]["weight"] == 1.0
    transformer = seeded_slice(CONFIG["pruning"], None)
    assert CONFIG["pruning"]["scope"] == "transformer"
    assert not {"refit_output", "outer_width", "min_group_share"} & set(transformer)
    embedding = seeded_slice({**CONFIG["pruning"], "scope": "embedding"}, None)
    assert {"refit_output", "outer_width"} <= set(embedding) and "min_group_share" not in embedding
    decoder = seeded_slice({**CONFIG["pruning"], "scope": "decoder"}, None)
    assert {"refit_output", "outer_width", "min_group_share"} <= set(decoder)


def test_a_replicate_seed_replaces_the_config_seed():
    assert seeded_slice(CONFIG["train"], None)["seed"] == CONFIG["train"]["seed"]
    assert seeded_slice(CONFIG["train"], 2)["seed"] == 2


def test_a_cycle_sees_its_own_target_and_its_parent_only():
    pruning = seeded_slice(CONFIG["pruning"], None)
    first = cycle_slice(pruning, *scheduled_targets([0.45, 0.65, 0.85], 1))
    assert (first["target"], first["previous_target"]) == (0.45, 0.0)
    second = cycle_slice(pruning, *scheduled_targets([0.45, 0.65], 2))
    appended = cycle_slice(pruning, *scheduled_targets([0.45, 0.65, 0.9], 2))
    assert second == appended  # appending a target leaves cycle 2's params alone
    assert not {"methods", "cycle_targets", "schedule", "guard"} & set(first)
    assert list(first) == sorted(first)
    oneshot = oneshot_slice(pruning)
    assert "target" not in oneshot and "cycle_targets" not in oneshot
    try:
        scheduled_targets([0.45], 2)
    except ValueError as err:
        assert "cycle 2 asked for, but pruning.cycle_targets has 1 targets" in str(err)
    else:
        raise AssertionError("cycle 2 of one target was planned")


def test_the_report_config_leaves_out_disk_and_scheduler_keys():
    shown = shown_config({**CONFIG, "train": {**CONFIG["train"], "keep_state": True}})
    assert "resources" not in shown and "keep_state" not in shown["train"]
    assert shown["pruning"] == canonical(CONFIG["pruning"])
