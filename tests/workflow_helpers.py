"""Run snakemake on the repository's workflow in a scratch folder and read what it schedules."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "config" / "tiny.yaml"


def snakemake(
    workdir: Path, *args: str, config: Path | None = TINY_CONFIG, check: bool = True
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    if config is not None:
        cmd += ["--configfile", str(config)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def scheduled(workdir: Path, config: Path | None = TINY_CONFIG) -> Counter:
    """Rule -> number of jobs that a dry run would run (empty when there is nothing to do)."""
    out = snakemake(workdir, "-n", config=config)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return Counter()
    table = text.split("Job stats:", 1)[1]
    jobs = Counter()
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not match:
            break
        if match.group(1) != "total":
            jobs[match.group(1)] = int(match.group(2))
    return jobs


def edited_config(tmp: Path, base: Path = TINY_CONFIG, **changes) -> Path:
    """A copy of `base` with dotted keys changed: edited_config(p, **{"preprocess.window": [..]})."""
    cfg = yaml.safe_load(base.read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp / f"config-{abs(hash(tuple(sorted(map(str, changes.items()))))) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
