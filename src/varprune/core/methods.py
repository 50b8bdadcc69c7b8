"""The registry of pruning methods, and the names of the reference models, in one place.

A method is one `register(Method(...))`: its name becomes a valid `pruning.methods` entry and
Snakemake wildcard, its solver plans every cycle, its role decides which pairs the report tests
(proposed vs baseline, each informed method vs each control), and its colour draws it. Pure
Python: the workflow imports this at parse time, before any job and without torch; solvers are
named as "module:function" and imported only when a cycle plans.

A method from another package reaches the workflow through the entry-point group
`varprune.methods` (a `Method`, or a list of them), as pytest finds its plugins: every job is a
fresh process, so a registration made in a notebook or a test would not reach it. In that
package's pyproject.toml:

    [project.entry-points."varprune.methods"]
    uniform_random = "my_methods:UNIFORM_RANDOM"
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

ROLES = ("proposed", "baseline", "control")


@dataclass(frozen=True)
class Method:
    """A pruning method: how it allocates a MAC budget to layers, and how the report shows it.

    `solver` is a callable or "module:function" with the signature of
    `varprune.pruning.sequence.fixed_counts` plus a keyword `seed` (the cycle's seed).
    `levels`: the solver fills `Sequence.level` (the hierarchical sequence; drawn as heat maps).
    """

    name: str
    description: str
    solver: str | Callable
    role: str
    colour: str = "grey"
    levels: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"method {self.name!r}: role must be one of {ROLES}, not {self.role!r}")
        if not self.name.isidentifier() or not self.name.islower():
            raise ValueError(f"method {self.name!r}: a lower-case identifier is needed (it is a folder name)")

    def solve(self) -> Callable:
        """The solver function (imported on first use)."""
        if callable(self.solver):
            return self.solver
        module, _, function = self.solver.partition(":")
        return getattr(importlib.import_module(module), function)


# Pruning methods, in the order tables and figures show them (registration order).
PRUNING_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method (its name must be new); returns it."""
    if method.name in PRUNING_METHODS or method.name in CONTROLS or method.name == "dense":
        raise ValueError(f"a model named {method.name!r} exists already")
    PRUNING_METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    PRUNING_METHODS.pop(name, None)


_SEQUENCE = "varprune.pruning.sequence"

# Reference models every comparison is read against (results/{run}/{name}/).
CONTROLS: dict[str, str] = {
    "dense_long": "the dense model fine-tuned, without pruning, as long as the last cycle of a method "
                  "was in total (cycles × the fine-tuning budget, same recipe)",
    "transformer_off": "every MSA and FFN block removed (width 0: the residual stream passes through), "
                       "fine-tuned as long as dense_long (cycles × the fine-tuning budget, same recipe): "
                       "what the model does without its transformer",
}

register(Method("variable", "the paper's variable pruning-rate sequence (rates fall with layer significance)",
                f"{_SEQUENCE}:variable_counts", "proposed", "tab:red", levels=True))
register(Method("fixed", "one pruning rate for every layer (the paper's baseline)",
                f"{_SEQUENCE}:fixed_counts", "baseline", "tab:blue"))
register(Method("global", "one ranking of layer-normalised group scores across layers "
                "(Torch-Pruning's default)",
                f"{_SEQUENCE}:global_counts", "baseline", "tab:green"))
register(Method("random", "per-layer rates with variable's spread, assigned at random (seeded): the control "
                "any informed allocation must beat", f"{_SEQUENCE}:random_counts", "control", "tab:purple"))

PLUGIN_GROUP = "varprune.methods"


def load_plugins() -> list[str]:
    """Register the methods installed packages declare under the entry-point group
    `varprune.core.methods`; returns the names registered now (one already registered is skipped).
    A plugin that cannot be loaded, or names something that is not a Method, stops with an
    error naming the entry point."""
    added = []
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            loaded = entry.load()
        except Exception as err:  # any failure inside the plugin's import
            raise ImportError(f"pruning-method plugin {entry.name!r} ({entry.value}) cannot be loaded: "
                              f"{type(err).__name__}: {err}") from err
        for method in loaded if isinstance(loaded, list | tuple) else [loaded]:
            if not isinstance(method, Method):
                raise TypeError(f"pruning-method plugin {entry.name!r} ({entry.value}) names a "
                                f"{type(method).__name__}, not a varprune.core.methods.Method")
            if PRUNING_METHODS.get(method.name) is not method:
                register(method)
                added.append(method.name)
    return added


load_plugins()

_REFERENCE_COLOURS = {"dense": "black", "dense_long": "dimgray", "transformer_off": "darkgray"}


def colour(name: str) -> str:
    """The colour of a model in every figure: a reference model's, or its method's."""
    if name in _REFERENCE_COLOURS:
        return _REFERENCE_COLOURS[name]
    method = PRUNING_METHODS.get(name)
    return method.colour if method else "grey"


def comparison_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """The method pairs the report tests, among `methods`, in registry order: every proposed
    method against every baseline, then every informed method against every control."""
    ordered = [PRUNING_METHODS[m] for m in PRUNING_METHODS if m in methods]
    proposed = [m.name for m in ordered if m.role == "proposed"]
    baselines = [m.name for m in ordered if m.role == "baseline"]
    controls = [m.name for m in ordered if m.role == "control"]
    return [(a, b) for a in proposed for b in baselines] + [
        (a, b) for a in proposed + baselines for b in controls]


# Readable names of metrics and costs for tables meant for people (CSV files keep the keys).
LABELS: dict[str, str] = {
    "dice": "Dice", "voe": "VOE", "rvd": "RVD", "assd_mm": "ASSD (mm)", "msd_mm": "MSD (mm)",
    "hd95_mm": "HD95 (mm)", "params": "Params", "macs_full": "MACs", "macs_thop": "MACs (thop)",
    "latency_ms": "Latency (ms)",
}


def method_pattern() -> str:
    """A regular expression matching exactly the method names (Snakemake wildcard constraint)."""
    return "|".join(PRUNING_METHODS)


def unknown_methods(methods: list[str]) -> list[str]:
    """The names in `methods` that are not pruning methods."""
    return [m for m in methods if m not in PRUNING_METHODS]
