"""One method's guarded search as the workflow walks it: which checkpoint a cycle starts from,
which reference judges it, where the search falls back to, what the selection reads.

The decisions are files the `guard` checkpoint writes; `read(k)` returns decision k's path once
it exists (in the workflow: `checkpoints.guard.get(...).output[0]`, which makes Snakemake
schedule it first). Everything else is the pure logic of varprune.pruning.guard and the paths
of varprune.core.layout, so the navigation is unit-tested without Snakemake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from varprune.core.layout import cycle_model, decision_file, reference_folder
from varprune.pruning.guard import Decision, GuardSettings, plan


@dataclass(frozen=True)
class GuardSearch:
    run_folder: str  # results/{run}
    method: str
    settings: GuardSettings
    read: Callable[[int], str]  # decision k's path, once the guard has written it
    reference: str = "dense_long"  # pruning.guard.reference

    def decisions(self, until: int | None = None) -> list[Decision]:
        """The decisions of cycles 1, 2, ... up to `until` - 1 (else to the one that ended the
        search). Asking past the end of the search is an error naming the decision file."""
        chain, k = [], 1
        while until is None or k < until:
            path = self.read(k)
            chain.append(Decision.read(path))
            if chain[-1].stopped_because is not None:
                if until is not None:
                    raise ValueError(f"{path}: the search of {self.method} ended at cycle {k}; "
                                     f"cycle {until} is not part of it")
                break
            k += 1
        return chain

    def plan(self, k: int) -> tuple[float, int, int]:
        """(target, parent cycle, lineage depth) of cycle k."""
        return plan(self.decisions(until=k), self.settings)

    def targets(self, k: int) -> tuple[float, float]:
        """(target, the parent cycle's target; 0 for dense) of cycle k: what its pruning takes."""
        chain = self.decisions(until=k)
        target, parent, _ = plan(chain, self.settings)
        return target, next((d.target for d in chain if d.cycle == parent), 0.0)

    def parent_model(self, k: int) -> str:
        """The checkpoint cycle k prunes: the cycle its plan names (0: dense)."""
        return cycle_model(self.run_folder, self.method, self.plan(k)[1])

    def reference_model(self, k: int) -> str:
        """The model cycle k is judged against: dense_long fine-tuned as often as its lineage."""
        depth = self.plan(k)[2] if self.reference != "dense" else 0
        return f"{self.run_folder}/{reference_folder(depth, self.reference)}/model.pt"

    def fallback_model(self, k: int) -> str:
        """Where the search goes back to if cycle k fails: the last cycle within tolerance, or dense."""
        chain = self.decisions(until=k)
        return cycle_model(self.run_folder, self.method, chain[-1].selected if chain else 0)

    def earlier_decision_files(self, k: int) -> list[str]:
        """The decision files before cycle k (inputs of its judgement; not read here)."""
        return [decision_file(self.run_folder, self.method, j) for j in range(1, k)]

    def selection_inputs(self) -> dict[str, str | list[str]]:
        """What selecting reads: every decision of the finished search and the selected checkpoint."""
        chain = self.decisions()
        return {"decisions": [decision_file(self.run_folder, self.method, d.cycle) for d in chain],
                "model": cycle_model(self.run_folder, self.method, chain[-1].selected)}

    def selected_reference(self) -> tuple[int, str]:
        """(cycles tried, the reference folder matched to the selected cycle)."""
        chain = self.decisions()
        depth = next((d.depth for d in chain if d.cycle == chain[-1].selected), 0)
        return len(chain), reference_folder(depth, self.reference)
