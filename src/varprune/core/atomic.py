"""Write outputs under a temporary name and rename them when complete.

Snakemake, a user's Ctrl-C or a crash must never leave a half-written file under the final
name: the next run would take it as done. Every writer in varprune goes through here.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, outputs get the usual mode


HOST = socket.gethostname().split(".")[0].replace(".", "-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(final: Path) -> None:
    """Remove the temporary files of `final` left by writers that were killed (kill -9, power
    loss: no `finally` ran). Their names carry the writer's host and pid; only files of this host
    whose writer is gone are removed (a pid means nothing on another node of a shared disk)."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.pid(\d+)@{re.escape(HOST)}\.[^.]+\.tmp.*")
    for path in final.parent.glob(f".{glob.escape(final.name)}.pid*"):
        match = pattern.fullmatch(path.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    The temporary name keeps the final suffix (e.g. `.nii.gz`) because some writers choose
    the format from it, and the writer's pid, so that the next writer removes what a killed
    one left behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    suffix = suffix if suffix is not None else "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.pid{os.getpid()}@{HOST}.", suffix=f".tmp{suffix}",
                                    dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(path: str | os.PathLike, columns: list[str], rows: list[dict]) -> None:
    """Write rows as CSV with a header of `columns`, atomically."""
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
