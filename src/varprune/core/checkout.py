"""Which copy of varprune the workflow's jobs run: the one in the workflow's own checkout."""

from __future__ import annotations

import os
import sys


def use_checkout_library(src_root: str) -> None:
    """Put `src_root` first on this process's import path and on PYTHONPATH for its jobs.

    A `--sdm conda` environment holds the dependencies only, and a second checkout must run its
    own edits: in both cases the code a job imports has to come from the workflow's src/, not
    from whatever copy of varprune is installed.
    """
    if src_root not in sys.path:
        sys.path.insert(0, src_root)
    others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src_root]
    os.environ["PYTHONPATH"] = os.pathsep.join([src_root, *others])
