"""What jobs ask a scheduler for (varprune.workflow.resources): grows with the work, a GPU where the
profile offers one, per-rule overrides; and a SLURM dry run of the paper preset shows it."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from varprune.workflow.resources import Calibration, cohort, rule_resources, unknown_rules

from .workflow_helpers import REPO, snakemake

DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))


def _config(preset: str | None = None, **changes) -> dict:
    """config.yaml with a preset laid over it (per section, as Snakemake merges them)."""
    cfg = copy.deepcopy(DEFAULT)
    if preset:
        for key, value in yaml.safe_load((REPO / "config" / preset).read_text(encoding="utf-8")).items():
            cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        node[leaf] = value
    return cfg


def _train(cfg: dict, offered_gpus: int = 0) -> dict:
    return rule_resources(cfg, "train", cohort(cfg, 12, 4, 4), offered_gpus=offered_gpus)


def test_the_paper_preset_asks_more_than_the_default_and_runtime_scales_with_epochs():
    default, paper = _train(_config()), _train(_config("paper.yaml"))
    assert paper["runtime"] > 10 * default["runtime"] and paper["mem_mb"] > default["mem_mb"]
    longer = _train(_config("paper.yaml", **{"train.epochs": 200}))
    assert 1.9 < longer["runtime"] / paper["runtime"] < 2.1
    # A step budget overrides epochs, as in training.
    assert _train(_config(**{"train.steps": 10})) ["runtime"] < default["runtime"]


def test_a_gpu_is_asked_for_on_cuda_or_on_auto_where_the_profile_offers_one():
    auto = _config("paper.yaml")
    assert _train(auto)["gpu"] == 0
    on_gpu = _train(auto, offered_gpus=4)
    assert on_gpu["gpu"] == 1 and on_gpu["runtime"] < _train(auto)["runtime"]
    assert _train(_config("paper.yaml", **{"train.device": "cuda"}))["gpu"] == 1
    assert _train(_config("paper.yaml", **{"train.device": "cpu"}), offered_gpus=4)["gpu"] == 0


def test_rules_in_the_config_replace_the_estimate_and_unknown_rules_fail():
    cfg = _config(**{"resources.rules": {"train": {"runtime": 999}}})
    got = _train(cfg)
    assert got["runtime"] == 999 and got["mem_mb"] == _train(_config())["mem_mb"]
    with pytest.raises(KeyError, match="no_such_rule"):
        rule_resources(cfg, "no_such_rule", cohort(cfg, 1, 1, 1))
    # A typo in the config is named (the workflow stops on it at parse time).
    assert unknown_rules(_config(**{"resources.rules": {"trian": {"runtime": 9}, "train": {}}})) == ["trian"]
    assert unknown_rules(cfg) == []


def test_larger_cases_ask_for_more_memory_in_the_data_steps():
    small = _config(**{"data.source": "ircadb"})
    large = _config(**{"data.source": "nifti"})
    group = {name: cohort(cfg, 3, 1, 1) for name, cfg in (("small", small), ("large", large))}
    assert (rule_resources(large, "preprocess", group["large"])["mem_mb"]
            > rule_resources(small, "preprocess", group["small"])["mem_mb"])
    assert Calibration.from_config(None) == Calibration()


def _requests(output: str) -> dict[str, dict[str, str]]:
    """rule -> its first job's resources, from a dry run's job table."""
    found = {}
    for rule, line in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", output, re.M):
        found.setdefault(rule, dict(item.split("=", 1) for item in line.split(", ") if "=" in item))
    return found


@pytest.mark.workflow
def test_a_slurm_dry_run_of_the_paper_preset_shows_the_requests(tmp_path):
    """profiles/slurm on config/paper.yaml (no SLURM needed for a dry run); with a profile that
    offers GPUs (`--resources gpu=N`), the training jobs ask for one and for less time."""
    args = ("-n", "--profile", str(REPO / "profiles" / "slurm"))
    paper = REPO / "config" / "paper.yaml"
    cpu = _requests(snakemake(tmp_path, *args, config=paper).stdout)
    default = _requests(snakemake(tmp_path, "-n", config=None).stdout)
    gpu = _requests(snakemake(tmp_path, *args, "--resources", "gpu=4", config=paper).stdout)
    for rule in ("train", "prune_cycle", "dense_long", "oneshot", "evaluate", "preprocess"):
        assert int(cpu[rule]["runtime"]) >= int(default[rule]["runtime"]), rule
        assert int(cpu[rule]["mem_mb"]) >= int(default[rule]["mem_mb"]), rule
    assert int(cpu["train"]["runtime"]) > 10 * int(default["train"]["runtime"])
    assert cpu["train"]["gpu"] == "0" and gpu["train"]["gpu"] == "1" and gpu["prune_cycle"]["gpu"] == "1"
    assert int(gpu["train"]["runtime"]) < int(cpu["train"]["runtime"])
    assert cpu["train"]["slurm_partition"] == "main"


@pytest.mark.workflow
def test_latency_is_timed_with_no_other_job_running_locally(tmp_path):
    """With cost.alone (the default) the local latency job reserves every core, so Snakemake starts
    nothing beside it; its torch still times with cost.threads. Off, it reserves cost.threads.
    The cost jobs (params, MACs) time nothing and take one thread."""
    def cost_threads(config, rule="latency"):
        out = snakemake(tmp_path, "-n", "--cores", "2", config=config).stdout
        jobs = re.findall(rf"^rule {rule}:\n((?:    .*\n)+)", out, re.M)
        assert jobs
        # Snakemake's job table shows threads only when there are more than one.
        return {int(m.group(1)) if (m := re.search(r"threads: (\d+)", job)) else 1 for job in jobs}

    assert cost_threads(None) == {2} and cost_threads(None, "cost") == {1}
    shared = tmp_path / "shared.yaml"
    shared.write_text("cost: {alone: false}\n")
    assert cost_threads(shared) == {1}
