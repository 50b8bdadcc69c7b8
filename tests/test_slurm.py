"""The small pipeline submitted through profiles/slurm to a real single-node SLURM cluster.

The test stands the cluster up itself: a slurm.conf in a temp folder naming this host, munged,
slurmctld and slurmd, all stopped afterwards. With accounting off, `sacct` knows no jobs, so
the executor plugin polls `squeue` and slurm.conf keeps finished jobs there (MinJobAge).
It skips, saying why, only where SLURM cannot run (not installed, or not root).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .workflow_helpers import REPO, SNAKEMAKE_TIMEOUT_S, edited_config

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


def _skip_reason() -> str | None:
    missing = [name for name in DAEMONS if not shutil.which(name) and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    return None


def _node_line() -> str:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = out.splitlines()[0]
    memory = int(re.search(r"RealMemory=(\d+)", line).group(1))
    # Leave some memory to the machine, as a real node would.
    return re.sub(r"RealMemory=\d+", f"RealMemory={int(memory * 0.8)}", line)


def _write_conf(folder: Path) -> Path:
    host = socket.gethostname()
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(f"""ClusterName=varprune-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
SlurmctldParameters=enable_configless
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
{_node_line()} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_CONF": str(_write_conf(folder))}
    started = []
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
        started.append("munged")
    ctld = subprocess.Popen(["slurmctld", "-D", "-i"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    # Configless slurmd: it caches the config under /run/slurm/conf, where srun inside a job
    # finds it (the executor plugin drops SLURM_* variables, SLURM_CONF included, in the job).
    slurmd = subprocess.Popen(["slurmd", "-D", "--conf-server", f"{socket.gethostname()}:16817"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                   text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(1)
        else:
            logs = "\n".join((folder / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log")
                             if (folder / f).exists())
            pytest.fail(f"the test cluster did not come up (sinfo: {state!r})\n{logs}")
        yield env
    finally:
        for proc in (slurmd, ctld):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if "munged" in started:
            subprocess.run(["pkill", "-x", "munged"])


def test_tiny_pipeline_runs_through_the_slurm_profile(cluster, tmp_path):
    config = edited_config(tmp_path, **{"pruning.methods": ["variable"], "pruning.cycle_targets": [0.04]})
    workdir = tmp_path / "work"
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
        "--profile", str(REPO / "profiles" / "slurm"), "--jobs", "4",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-no-account", "--latency-wait", "5", "--configfile", str(config),
    ]
    result = subprocess.run(cmd, env=cluster, capture_output=True, text=True,
                            timeout=SNAKEMAKE_TIMEOUT_S)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-5000:]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", text)
    stats = text.split("Job stats:", 1)[1]
    total = int(re.search(r"^total\s+(\d+)", stats, re.M).group(1))
    local = sum(int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)", stats, re.M)
                if rule in ("all", "download"))
    assert len(submitted) == total - local and len(set(submitted)) == len(submitted)
    assert (workdir / "results" / "tiny" / "report" / "report.html").exists()
    queue = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=cluster, capture_output=True,
                           text=True).stdout
    states = dict(line.split() for line in queue.splitlines())
    assert all(states.get(job) == "COMPLETED" for job in submitted), states
