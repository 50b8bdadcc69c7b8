"""Read the 3D-IRCADb-01 archive: patients, inner zips, safe extraction, slice order.

Everything here works on the zip as downloaded (`3Dircadb1.zip`, or a one-patient zip
`3Dircadb1.N.zip`), without unpacking the whole 820 MB archive to disk.
"""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEBRIS_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
PATIENT_FOLDER = re.compile(r"(?:^|/)3Dircadb1\.(\d+)/")
# Tumour folders in the real archive: livertumor, livertumor01..07, livertumor1, livertumors, tumor.
TUMOUR_FOLDER = re.compile(r"^(liver)?tumou?rs?\d*$", re.IGNORECASE)


class ArchiveError(Exception):
    """The archive, or one patient in it, cannot be read; the message names the file."""


# Everything a damaged member can raise while it is read: bad CRC, truncated stream, bad deflate data.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError)


@dataclass(frozen=True)
class ExtractionLimits:
    """What one extraction may write, checked on the declared sizes before writing and again on
    the bytes as they stream (declared sizes can lie). A DICOM slice is about 0.5 MB (512² int16);
    an empty mask slice compresses about 1000:1, so the ratio applies to large members only."""

    max_member_mb: float = 64.0
    max_total_mb: float = 16384.0
    max_ratio: float = 200.0
    ratio_from_mb: float = 4.0  # members smaller than this may compress better than max_ratio

    def check(self, infos: list[zipfile.ZipInfo], case: str, what: str) -> None:
        total = 0
        for info in infos:
            size_mb = info.file_size / 2**20
            if size_mb > self.max_member_mb:
                raise ArchiveError(f"{case}: {what}:{info.filename} would unpack to {size_mb:.0f} MB, more "
                                   f"than the {self.max_member_mb:.0f} MB a member may have (a zip bomb?)")
            ratio = info.file_size / max(info.compress_size, 1)
            if size_mb >= self.ratio_from_mb and ratio > self.max_ratio:
                raise ArchiveError(f"{case}: {what}:{info.filename} expands {ratio:.0f}:1, more than "
                                   f"{self.max_ratio:.0f}:1 (a zip bomb?)")
            total += info.file_size
        if total / 2**20 > self.max_total_mb:
            raise ArchiveError(f"{case}: {what} would unpack to {total / 2**20:.0f} MB, more than "
                               f"{self.max_total_mb:.0f} MB")


def case_id(patient: int) -> str:
    """Case id used in every path downstream: patient 3 -> `ircad03`."""
    return f"ircad{patient:02d}"


def patient_of(case: str) -> int:
    """Inverse of `case_id`."""
    match = re.fullmatch(r"ircad(\d+)", case)
    if not match:
        raise ValueError(f"not a case id: {case!r} (expected ircadNN)")
    return int(match.group(1))


def is_debris(name: str) -> bool:
    """macOS and Windows leftovers that appear anywhere in the real archive."""
    parts = PurePosixPath(name).parts
    return any(p == "__MACOSX" or p.startswith("._") or p in DEBRIS_NAMES for p in parts)


def natural_key(name: str) -> list[object]:
    """Sort key that puts `image_2` before `image_10`."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def open_zip(path: str | Path, what: str) -> zipfile.ZipFile:
    """Open a zip or fail with a message that names it."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"{what}: {path} is not a readable zip archive ({err})") from err


def list_patients(archive: zipfile.ZipFile) -> list[int]:
    """Patient numbers that have a PATIENT_DICOM.zip in the archive."""
    found = set()
    for name in archive.namelist():
        if is_debris(name) or not name.endswith("/PATIENT_DICOM.zip"):
            continue
        match = PATIENT_FOLDER.search(name)
        if match:
            found.add(int(match.group(1)))
    return sorted(found)


def patient_prefix(archive: zipfile.ZipFile, patient: int) -> str:
    """The member-name prefix of one patient's folder (works for full and one-patient zips)."""
    pattern = re.compile(rf"(?:^|/)3Dircadb1\.{patient}/")
    for name in archive.namelist():
        if is_debris(name):
            continue
        match = pattern.search(name)
        if match:
            return name[: match.end()]
    raise ArchiveError(f"{case_id(patient)}: no folder 3Dircadb1.{patient}/ in {archive.filename}")


def read_inner_zip(archive: zipfile.ZipFile, prefix: str, inner: str, case: str) -> zipfile.ZipFile:
    """Open an inner zip (e.g. PATIENT_DICOM.zip) of a patient folder, in memory."""
    member = prefix + inner
    try:
        data = archive.read(member)
    except KeyError as err:
        raise ArchiveError(f"{case}: {member} is missing from {archive.filename}") from err
    except ZIP_ERRORS as err:
        raise ArchiveError(f"{case}: cannot read {member} ({err})") from err
    try:
        inner_zip = zipfile.ZipFile(io.BytesIO(data))
        bad = inner_zip.testzip()
    except ZIP_ERRORS as err:
        raise ArchiveError(f"{case}: {member} is a corrupt zip ({err})") from err
    if bad is not None:
        raise ArchiveError(f"{case}: {member} is a corrupt zip (bad CRC in {bad})")
    return inner_zip


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def safe_extract(zf: zipfile.ZipFile, dest: Path, case: str, limits: ExtractionLimits | None = None,
                 what: str | None = None) -> list[Path]:
    """Extract all non-debris files of `zf` under `dest`, refusing paths that escape it, links,
    and more data than `limits` allow; every failure names the case and the member as `what`
    (the user's file name, never the temporary folder)."""
    limits = limits or ExtractionLimits()
    what = what or Path(str(zf.filename or "zip")).name
    dest = dest.resolve()
    infos = [i for i in zf.infolist() if not i.is_dir() and not is_debris(i.filename)]
    for info in infos:
        target = (dest / info.filename).resolve()
        if PurePosixPath(info.filename).is_absolute() or not target.is_relative_to(dest):
            raise ArchiveError(
                f"{case}: refusing to extract {info.filename!r}: the path escapes the target folder"
            )
        if _is_link(info):
            raise ArchiveError(f"{case}: {what}:{info.filename} is a symbolic link; refusing to extract it")
    limits.check(infos, case, what)
    budget = limits.max_member_mb * 2**20
    written = []
    for info in infos:
        target = (dest / info.filename).resolve()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                size = 0
                while chunk := src.read(1 << 20):
                    size += len(chunk)
                    if size > budget:
                        raise ArchiveError(f"{case}: {what}:{info.filename} unpacks to more than "
                                           f"{limits.max_member_mb:.0f} MB (its header said "
                                           f"{info.file_size / 2**20:.1f} MB)")
                    out.write(chunk)
        except ZIP_ERRORS as err:
            raise ArchiveError(f"{case}: {what}:{info.filename} cannot be extracted ({err})") from err
        written.append(target)
    return written


def series_folders(root: Path, top: str) -> dict[str, list[Path]]:
    """Group extracted slice files by folder below the inner zip's top folder `top`.

    Keys are structure names for MASKS_DICOM (`liver`, `livertumor01`, ...) and '' for a
    single series such as PATIENT_DICOM; slices are in natural order.
    """
    base = root / top if (root / top).is_dir() else root
    groups: dict[str, list[Path]] = {}
    for path in base.rglob("*"):
        if path.is_file() and not is_debris(path.name):
            key = path.parent.relative_to(base).as_posix()
            groups.setdefault("" if key == "." else key, []).append(path)
    return {key: sorted(files, key=lambda p: natural_key(p.name)) for key, files in groups.items()}
