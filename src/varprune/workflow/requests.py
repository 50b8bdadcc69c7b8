"""What each rule asks the scheduler for (threads, memory, runtime, a GPU) in this workflow.

The estimates are varprune.workflow.resources'; this adds what depends on how Snakemake runs: the GPUs a
profile offers and, for the jobs that time latency, the cores of a local run.
"""

from __future__ import annotations

from dataclasses import dataclass

from varprune.workflow.checks import config_error
from varprune.workflow.resources import Cohort, cohort, rule_resources


@dataclass
class JobRequests:
    """`offered_gpus`: Snakemake's global resource `gpu` (0 when unset). `local_cores`: the
    cores of a local run, None where each job has its own allocation (a cluster, or a job that
    a cluster runs, which parses the workflow again and must ask what its submitter asked)."""

    config: dict
    cohort: Cohort
    offered_gpus: int = 0
    local_cores: int | None = None

    @classmethod
    def for_splits(cls, config: dict, splits: dict, offered_gpus: int = 0,
                   local_cores: int | None = None) -> JobRequests:
        """Sized by the largest train, validation and test set of any replicate's split."""
        sizes = (max(len(split[subset]) for split in splits.values()) for subset in ("train", "val", "test"))
        return cls(config, cohort(config, *sizes), offered_gpus, local_cores)

    def resources(self, rule: str, rounds: int = 1) -> dict:
        """mem_mb, runtime (min) and gpu of `rule` (`resources.rules.{rule}` sets them outright);
        a bad estimate setting is a ConfigError naming the key."""
        try:
            return rule_resources(self.config, rule, self.cohort, rounds, self.offered_gpus)
        except (KeyError, TypeError) as err:
            config_error(f"resources.rules.{rule}", err)

    def timing_threads(self) -> int:
        """Threads reserved for the jobs that time latency: with cost.alone every core of a local
        run (their torch still uses cost.threads), so that no other job runs meanwhile; on a
        cluster each job has its own allocation and asks for cost.threads."""
        threads = self.config["cost"]["threads"]
        if self.config["cost"]["alone"] and self.local_cores is not None:
            return max(threads, self.local_cores or threads)
        return threads
