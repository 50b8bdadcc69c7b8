"""Send a job's output to its Snakemake log file while keeping errors visible on the console."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def to_log_file(path: str | os.PathLike) -> Iterator[None]:
    """Redirect stdout, stderr and `logging` into `path` for the duration of the block.

    A failing job writes its traceback to the log and repeats the last line of the error on
    the real stderr, so the user sees why a job failed without opening the log.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    real_stderr = sys.stderr
    with open(path, "w", buffering=1, encoding="utf-8", errors="replace") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    yield
                except BaseException as err:
                    traceback.print_exc(file=log)
                    print(f"varprune: {type(err).__name__}: {err} (log: {path})", file=real_stderr)
                    raise
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
