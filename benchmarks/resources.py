"""What each rule of a preset asks the scheduler for, read from a Snakemake dry run.

Run from the repository root:
  python benchmarks/resources.py                                   # default, paper, paper with GPUs
  python benchmarks/resources.py --preset mine=my.yaml --gpus 0 4  # your config, without and with GPUs

For each preset (and each number of GPUs the profile offers, Snakemake's `--resources gpu=N`)
it dry-runs the workflow with profiles/slurm and prints, per rule, the first job's runtime
(minutes), mem_mb and gpu as Snakemake would submit them (varprune.workflow.resources estimates them).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
JOB = re.compile(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", re.M)


def requests(config: Path | None, gpus: int) -> dict[str, dict[str, str]]:
    """rule -> resources of its first job in a dry run of `config` through profiles/slurm."""
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", work, "-n",
               "--profile", str(REPO / "profiles" / "slurm")]
        if config is not None:
            cmd += ["--configfile", str(config)]
        if gpus:
            cmd += ["--resources", f"gpu={gpus}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found: dict[str, dict[str, str]] = {}
    for rule, line in JOB.findall(out):
        found.setdefault(rule, dict(item.split("=", 1) for item in line.split(", ") if "=" in item))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", metavar="NAME=CONFIG",
                        help="a config file laid over config/config.yaml (repeatable); default: "
                             "default and paper=config/paper.yaml")
    parser.add_argument("--gpus", type=int, nargs="+", default=None,
                        help="GPUs the profile offers (default: 0, and 4 for the paper preset)")
    args = parser.parse_args()
    presets = [p.split("=", 1) for p in args.preset] if args.preset else [["default", ""],
                                                                          ["paper", "config/paper.yaml"]]
    rows = []
    for name, path in presets:
        for gpus in args.gpus if args.gpus is not None else ([0, 4] if name == "paper" else [0]):
            for rule, res in requests(REPO / path if path else None, gpus).items():
                if "runtime" in res and rule != "all":
                    rows.append({"preset": name, "gpus offered": gpus, "rule": rule,
                                 "runtime_min": int(res["runtime"]), "mem_mb": int(res["mem_mb"]),
                                 "gpu": int(res.get("gpu", 0))})
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index="rule", columns=["preset", "gpus offered"],
                             values=["runtime_min", "mem_mb", "gpu"], aggfunc="first")
    print(wide.map(lambda v: "-" if pd.isna(v) else int(v)).to_string())


if __name__ == "__main__":
    main()
