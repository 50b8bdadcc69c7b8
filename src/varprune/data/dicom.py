"""The DICOM tags a CT is read with, checked before anything trusts them.

GDCM fills in what a file lacks without a word: no RescaleIntercept reads raw stored values as
HU (air at 0 instead of -1000), no PixelSpacing reads 1 mm pixels, missing or irregular
ImagePositionPatient gives a wrong slice spacing. Every one of these turns into a wrong liver
volume with exit code 0, so `convert` and `predict` both read the headers here first and refuse
with the file and the tag. Where the user knows the values are HU without the tags,
`assume_hu` (CLI `--assume-hu`, config `data.assume_hu`) accepts them with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from varprune.data.preprocess import has_air

log = logging.getLogger(__name__)

MODALITY, SLOPE, INTERCEPT = "0008|0060", "0028|1053", "0028|1052"
PIXEL_SPACING, PIXEL_REPRESENTATION = "0028|0030", "0028|0103"
POSITION, ORIENTATION = "0020|0032", "0020|0037"
TAG_NAMES = {
    MODALITY: "Modality (0008,0060)", SLOPE: "RescaleSlope (0028,1053)",
    INTERCEPT: "RescaleIntercept (0028,1052)", PIXEL_SPACING: "PixelSpacing (0028,0030)",
    POSITION: "ImagePositionPatient (0020,0032)", ORIENTATION: "ImageOrientationPatient (0020,0037)",
}
# Relative deviation of a slice gap from the median that is refused: ITK takes the z spacing from
# the first two slices, so this bounds the error of the volume's z spacing.
SPACING_TOLERANCE = 0.01


class DicomTagError(ValueError):
    """A tag the reading relies on is missing or inconsistent; the message names file and tag."""


@dataclass(frozen=True)
class Header:
    """The tags of one slice that the CT reading relies on."""

    name: str  # how messages name the file
    tags: dict[str, str]

    def number(self, tag: str, count: int) -> tuple[float, ...] | None:
        """The tag's backslash-separated numbers, or None when absent; a malformed value is an error."""
        raw = self.tags.get(tag, "").strip()
        if not raw:
            return None
        try:
            values = tuple(float(v) for v in raw.split("\\"))
        except ValueError:
            values = ()
        if len(values) != count or not all(np.isfinite(values)):
            raise DicomTagError(f"{self.name}: {TAG_NAMES[tag]} is {raw!r}, expected {count} number(s)")
        return values


def read_header(path: str | Path, name: str) -> Header:
    """The public tags of one DICOM file (header only); a RuntimeError when it is not DICOM."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return Header(name, {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()})


@dataclass(frozen=True)
class SeriesCheck:
    """What the headers say about the series (slices in the order given)."""

    order: list[int]  # the slices sorted by position along the slice normal (feet to head)
    rescaled: bool  # RescaleIntercept present: SimpleITK returns HU
    signed: bool  # signed stored pixels


def check_series(headers: Sequence[Header]) -> SeriesCheck:
    """Refuse a series whose modality, pixel spacing, rescale or slice positions cannot be trusted."""
    if not headers:
        raise DicomTagError("no slices")
    for header in headers:
        modality = header.tags.get(MODALITY, "").upper()
        if modality and modality != "CT":
            raise DicomTagError(f"{header.name}: {TAG_NAMES[MODALITY]} is {modality}, not CT")
        if header.number(PIXEL_SPACING, 2) is None:
            raise DicomTagError(f"{header.name}: no {TAG_NAMES[PIXEL_SPACING]}: the voxel size is unknown "
                                "(read without it, every pixel would be taken as 1 mm)")
    if not headers[0].tags.get(MODALITY):
        log.warning("%s: no %s; read as a CT", headers[0].name, TAG_NAMES[MODALITY])
    rescaled = [h.number(INTERCEPT, 1) is not None for h in headers]
    if any(rescaled) and not all(rescaled):
        missing = headers[rescaled.index(False)]
        raise DicomTagError(f"{missing.name}: no {TAG_NAMES[INTERCEPT]}, which other slices have")
    for header in headers:
        if rescaled[0] and header.number(SLOPE, 1) is None:
            raise DicomTagError(f"{header.name}: {TAG_NAMES[INTERCEPT]} without {TAG_NAMES[SLOPE]}")
    signed = headers[0].tags.get(PIXEL_REPRESENTATION, "0") == "1"
    return SeriesCheck(order=_slice_order(headers), rescaled=rescaled[0], signed=signed)


def _slice_order(headers: Sequence[Header]) -> list[int]:
    """Slices sorted along the normal; refuse missing positions, duplicates and uneven gaps."""
    if len(headers) == 1:
        return [0]
    positions = []
    first_cosines = None
    for header in headers:
        position = header.number(POSITION, 3)
        cosines = header.number(ORIENTATION, 6)
        for tag, value in ((POSITION, position), (ORIENTATION, cosines)):
            if value is None:
                raise DicomTagError(f"{header.name}: no {TAG_NAMES[tag]}: the slice cannot be placed, "
                                    "so the slice spacing is unknown")
        if first_cosines is None:
            first_cosines = cosines
        elif np.max(np.abs(np.subtract(cosines, first_cosines))) > 1e-4:
            raise DicomTagError(f"{header.name}: {TAG_NAMES[ORIENTATION]} differs from {headers[0].name}'s: "
                                "slices of one volume share one orientation (a localizer in the series?)")
        normal = np.cross(first_cosines[:3], first_cosines[3:])
        positions.append(float(np.dot(normal, position)))
    order = [int(i) for i in np.argsort(positions, kind="stable")]
    ordered = np.asarray(positions)[order]
    gaps = np.diff(ordered)
    k = int(np.argmin(gaps))
    if gaps[k] < 1e-3:
        raise DicomTagError(f"{headers[order[k]].name} and {headers[order[k + 1]].name}: two slices at the "
                            f"same position ({ordered[k]:.3f} mm along the slice normal)")
    median = float(np.median(gaps))
    k = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[k] - median) > SPACING_TOLERANCE * median:
        raise DicomTagError(f"{headers[order[k]].name} -> {headers[order[k + 1]].name}: slice gap "
                            f"{gaps[k]:.3f} mm, the others {median:.3f} mm (a missing slice?); "
                            f"{TAG_NAMES[POSITION]} must step evenly")
    return order


def check_hu(check: SeriesCheck, values: np.ndarray, first: str, assume_hu: bool = False) -> None:
    """Without a rescale, accept stored values as HU only when they look like it (signed, with
    air near -1000 HU; a padding value such as -2000 outside the scan circle does not count)."""
    if check.rescaled:
        return
    if assume_hu:
        log.warning("%s: no %s; the values are taken as HU because assume_hu is set", first,
                    TAG_NAMES[INTERCEPT])
        return
    if check.signed and has_air(values):
        log.info("%s: no %s; signed pixels with air near -1000: read as HU", first, TAG_NAMES[INTERCEPT])
        return
    raise DicomTagError(
        f"{first}: no {TAG_NAMES[INTERCEPT]} and the stored values (lowest {float(np.min(values)):.0f}) "
        "do not look like HU (air near -1000 HU); if they are HU, pass --assume-hu (predict) or set "
        "data.assume_hu (pipeline)")
