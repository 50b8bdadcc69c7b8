"""Run snakemake on the repository's workflow in a scratch folder and read what it schedules.

Machine dependence: set VARPRUNE_TEST_THREADS=N to run every torch computation of the suite
with N threads (the tests' own, and the workflow jobs' through the tiny config's `threads`),
which changes reduction orders and so the last bits of every float. The suite must pass with
1 and with 2 (docs/development.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from varprune.workflow.configfiles import merged_config as load_merged

REPO = Path(__file__).resolve().parents[1]
CORES = 2
# One Snakemake call of the tiny pipeline takes about 3 minutes on a 2-core machine of this
# kind; machines of the same kind were measured 1.5-3x slower. The limit only stops a hung run.
SNAKEMAKE_TIMEOUT_S = 3600


def threads_for_tests() -> int | None:
    """VARPRUNE_TEST_THREADS as an int, or None when unset (each computation keeps its default)."""
    value = os.environ.get("VARPRUNE_TEST_THREADS")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"VARPRUNE_TEST_THREADS must be a positive integer, got {value!r}")
    return int(value)


def _tiny_config() -> Path:
    """tests/config/tiny.yaml, or a copy whose jobs use VARPRUNE_TEST_THREADS threads."""
    base = REPO / "tests" / "config" / "tiny.yaml"
    threads = threads_for_tests()
    if threads is None:
        return base
    cfg = yaml.safe_load(base.read_text(encoding="utf-8"))
    for section in ("train", "finetune", "evaluate"):
        cfg.setdefault(section, {})["threads"] = threads
    path = Path(tempfile.mkdtemp(prefix="varprune-tiny-")) / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


TINY_CONFIG = _tiny_config()


def _without_slurm_controller() -> dict:
    """The environment for local Snakemake calls, with a `scontrol` that fails at once.

    On import, the SLURM executor plugin (installed for profiles/slurm) runs `scontrol show
    config`; where the SLURM client tools exist but no controller runs, as on CI machines with
    slurm-wlm installed for tests/test_slurm.py, that call waits about 9 s before failing, on
    every Snakemake call. The local runs never submit to SLURM, so they are told at once.
    """
    shim = Path(tempfile.mkdtemp(prefix="varprune-noslurm-"))
    scontrol = shim / "scontrol"
    scontrol.write_text("#!/bin/sh\necho 'no SLURM controller in the local workflow tests' >&2\nexit 1\n")
    scontrol.chmod(0o755)
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}


LOCAL_ENV = _without_slurm_controller()


def snakemake(
    workdir: Path, *args: str, config: Path | None = TINY_CONFIG, check: bool = True, repo: Path = REPO,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run Snakemake on `workdir`; `env`: variables set on top of the local-run environment."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(repo / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        str(CORES),
        *args,
    ]
    if config is not None:
        cmd += ["--configfile", str(config)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S,
                            env={**LOCAL_ENV, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


DAG_NODE = re.compile(r'^\s*\d+\[label = "(\w+)[^"]*", color = "[^"]*", style="([^"]*)"\];$', re.M)


def scheduled(workdir: Path, config: Path | None = TINY_CONFIG, repo: Path = REPO,
              targets: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Counter:
    """Rule -> number of jobs a run (of `targets`, else the default) would execute now (empty
    when there is nothing to do); `repo`: the workflow (Snakefile, rules, scripts, src) to run,
    by default this repository; `env` as for snakemake().

    Read from the job graph Snakemake writes for Graphviz (`--dag`, a node per job, labelled by
    its rule; jobs that need not run are drawn dashed), not from its printed job table. The
    default target `all` is a rule that does no work, so it is left out.
    """
    out = snakemake(workdir, *targets, "--dag", config=config, repo=repo, env=env)
    nodes = DAG_NODE.findall(out.stdout)
    if not nodes:
        raise AssertionError(f"no job graph from snakemake --dag:\n{out.stdout}\n{out.stderr}")
    return Counter(rule for rule, style in nodes if "dashed" not in style and rule != "all")


def edited_config(tmp: Path, base: Path = TINY_CONFIG, **changes) -> Path:
    """A copy of `base` with dotted keys changed: edited_config(p, **{"preprocess.window": [..]})."""
    cfg = yaml.safe_load(base.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp / f"config-{abs(hash(tuple(sorted(map(str, changes.items()))))) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def merged_config(config: Path | None = TINY_CONFIG) -> dict:
    """config/config.yaml with `config` laid over it, merged as Snakemake merges --configfile."""
    return load_merged(*([config] if config else []), defaults=REPO / "config" / "config.yaml")


def model_jobs(config: Path | None = TINY_CONFIG) -> dict:
    """The jobs from dense training on that a whole run of `config` has, counted from the config:
    per replicate the dense model, its controls and every (method, cycle) are trained, evaluated
    and costed; one latency job per replicate times them all; each method's last cycle is
    exported once per format; one report."""
    cfg = merged_config(config)
    methods, cycles = len(cfg["pruning"]["methods"]), len(cfg["pruning"]["cycle_targets"])
    seeds = len(cfg["replicates"]["seeds"] or [None])
    models = 3 + methods * cycles
    return {"train": seeds, "dense_long": seeds, "transformer_off": seeds, "oneshot": seeds,
            "prune_cycle": seeds * methods * cycles, "evaluate": seeds * models, "cost": seeds * models,
            "latency": seeds, "export": methods * len(cfg["export"]["formats"]), "report": 1}


def budget_met(reduction: float, target: float, dense_macs: float) -> bool:
    """The solver's promise for a cumulative target: at least `target` of the dense MACs removed,
    at most one point more (README: "met within 1 %").

    The budget is a whole number of MACs (rounded to the nearest one) and the reduction a float
    ratio, so a model that removed exactly its budget can read up to half a MAC, plus a few ulps
    of the division, below the target: the lower bound tolerates one MAC.
    """
    one_mac = 1.0 / dense_macs
    return target - one_mac <= reduction <= target + 0.01
