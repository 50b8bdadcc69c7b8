"""The import graph of src/varprune runs one way, from the application down to the foundation.

Every module belongs to one layer; a module may import its own layer and the layers below,
never one above. A new module must be placed in LAYERS (the test says which is missing), so the
architecture is written down here and checked on every run, not only in a picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "varprune"

# Lowest first. A name is a module or a package prefix (the longest match wins).
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation: files, run logs, code fingerprints, the method registry, the run's file contract",
     ["varprune", "core"]),
    ("data: archives, DICOM and NIfTI, the synthetic cohort, preprocessing, splits",
     ["data"]),
    ("model: the segmenters, their widths, channel couplings and MACs, running them",
     ["model", "pruning.groups", "pruning"]),
    ("engine: training, evaluation, cost, latency, export, pruning cycles and the guard",
     ["engine", "pruning.budget", "pruning.sequence", "pruning.significance", "pruning.surgery",
      "pruning.refit", "pruning.cycle", "pruning.oneshot", "pruning.guard", "pruning.guard_search",
      "pruning.selection"]),
    ("study: replicates, statistics, comparisons and the report",
     ["study", "report"]),
    ("application: the command, prediction, docs and the workflow's glue",
     ["app", "workflow"]),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(parts) or "varprune"


def _layer_of(name: str) -> int | None:
    """The layer of `name` (without the varprune. prefix; "varprune" is the package itself)."""
    best, layer = -1, None
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if (name == member or name.startswith(member + ".")) and len(member) > best:
                best, layer = len(member), index
    return layer


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m.removeprefix("varprune.") if m != "varprune" else "varprune"
            for m in found if m == "varprune" or m.startswith("varprune.")}


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def test_every_module_has_a_layer():
    missing = [name for name in MODULES if _layer_of(name) is None]
    assert not missing, f"place these modules in tests/test_layers.py LAYERS: {missing}"


def test_no_import_runs_up_a_layer():
    upward = []
    for name, path in MODULES.items():
        mine = _layer_of(name)
        for target in _imports(path):
            theirs = _layer_of(target)
            if theirs is not None and mine is not None and theirs > mine:
                upward.append(f"{name} ({LAYERS[mine][0].split(':')[0]}) imports {target} "
                              f"({LAYERS[theirs][0].split(':')[0]})")
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import():
    """The contract can fail: the data layer importing evaluation is caught."""
    assert _layer_of("data.preprocess") < _layer_of("engine.evaluate")
    assert _layer_of("pruning.groups") < _layer_of("pruning.cycle")
