"""A pruning method from outside the repository, installed the way a package would install it:
a module and a `.dist-info` folder whose entry_points.txt declares it under `varprune.methods`.
Put `root` on sys.path (or PYTHONPATH, for Snakemake and its jobs) and varprune finds it."""

from __future__ import annotations

from pathlib import Path

MODULE = "toy_methods"
# The plugin's code: tests/toy_methods.py, copied into the installed site as is.
SOURCE = Path(__file__).with_name(f"{MODULE}.py")


def write_plugin(root: Path, target: str = "toy_methods:UNIFORM_RANDOM") -> Path:
    """Install the toy method under `root` (entry point `uniform_random` -> `target`)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{MODULE}.py").write_text(SOURCE.read_text(encoding="utf-8"), encoding="utf-8")
    info = root / f"{MODULE}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    metadata = "Metadata-Version: 2.1\nName: toy-methods\nVersion: 0.1\n"
    (info / "METADATA").write_text(metadata, encoding="utf-8")
    entry_points = f"[varprune.methods]\nuniform_random = {target}\n"
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    return root
