"""Fetch the 3D-IRCADb-01 archive: redirects, retries, resume of a cut transfer, validation.

The partial file keeps the name `<out>.part` between attempts and between runs: Snakemake
deletes the declared outputs of a failed job, not this file, so rerunning the rule after a
network failure resumes with an HTTP Range request instead of starting the 820 MB again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import requests
from tqdm import tqdm

from varprune.data.archive import ArchiveError, is_debris, list_patients, open_zip, patient_prefix

log = logging.getLogger(__name__)
CHUNK = 1 << 16  # small reads: a cut transfer loses at most one chunk


class DownloadError(Exception):
    """The archive could not be fetched; the message says from where and why."""


class _Incomplete(Exception):
    pass


def validate_archive(path: str | os.PathLike) -> list[int]:
    """Check that `path` is an IRCADb archive: PATIENT_DICOM.zip and MASKS_DICOM.zip per patient."""
    with open_zip(path, "archive") as archive:
        patients = list_patients(archive)
        if not patients:
            raise ArchiveError(
                f"{path} holds no 3Dircadb1/3Dircadb1.N/PATIENT_DICOM.zip entry: "
                "this is not the 3D-IRCADb-01 archive"
            )
        names = {n for n in archive.namelist() if not is_debris(n)}
        for patient in patients:
            prefix = patient_prefix(archive, patient)
            if prefix + "MASKS_DICOM.zip" not in names:
                raise ArchiveError(f"{path}: patient {patient} has no MASKS_DICOM.zip")
    return patients


def _fetch_once(session: requests.Session, url: str, part: Path, timeout: float) -> None:
    """One attempt: continue `part` from where it stops, or start over if the server cannot."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, stream=True, headers=headers, timeout=timeout, allow_redirects=True) as resp:
        if resp.status_code == 416 and have:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return  # already complete
            part.unlink()
            raise _Incomplete("the server refused to resume; starting over")
        resp.raise_for_status()
        if have and resp.status_code != 206:
            log.info("the server does not resume transfers: starting over")
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with open(part, "ab" if have else "wb") as fh, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part")
        ) as bar:
            for chunk in resp.iter_content(CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Incomplete(f"got {size} of {total} bytes")


def download_archive(url: str, out: str | os.PathLike, retries: int = 5, timeout: float = 60.0,
                     backoff_s: float = 2.0) -> list[int]:
    """Download `url` to `out` with resume and retries, validate it, then rename it into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    if part.exists():
        log.info("resuming %s from %d bytes", part, part.stat().st_size)
    with requests.Session() as session:
        session.headers["User-Agent"] = "varprune (3D-IRCADb-01 download)"
        for attempt in range(retries + 1):
            try:
                _fetch_once(session, url, part, timeout)
                break
            except (requests.RequestException, _Incomplete) as err:
                status = getattr(getattr(err, "response", None), "status_code", None)
                if status is not None and 400 <= status < 500 and status not in (408, 429):
                    raise DownloadError(f"{url}: HTTP {status}; check data.url") from err
                if attempt == retries:
                    raise DownloadError(
                        f"{url}: download failed after {retries + 1} attempts ({err}); "
                        f"rerun to resume from {part}, or download by hand and set data.archive"
                    ) from err
                wait = min(backoff_s * 2**attempt, 60.0)
                log.warning("attempt %d failed (%s); retrying in %.0f s", attempt + 1, err, wait)
                time.sleep(wait)
    try:
        patients = validate_archive(part)
    except ArchiveError as err:
        part.unlink(missing_ok=True)  # complete but wrong: resuming it would never help
        raise DownloadError(f"{url}: the downloaded file is not usable: {err}") from err
    os.replace(part, out)
    log.info("downloaded %s: %d patients", out, len(patients))
    return patients


def use_local_archive(source: str | os.PathLike, out: str | os.PathLike) -> list[int]:
    """Validate an archive the user downloaded by hand and link it (or copy it) to `out`."""
    source = Path(source).expanduser().resolve()
    if not source.is_file():
        raise ArchiveError(f"data.archive: {source} does not exist")
    patients = validate_archive(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(source)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, out)
    return patients
