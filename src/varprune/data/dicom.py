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
ROWS, COLUMNS = "0028|0010", "0028|0011"
DESCRIPTION, SERIES_NUMBER, THICKNESS = "0008|103e", "0020|0011", "0018|0050"
TAG_NAMES = {
    MODALITY: "Modality (0008,0060)", SLOPE: "RescaleSlope (0028,1053)",
    INTERCEPT: "RescaleIntercept (0028,1052)", PIXEL_SPACING: "PixelSpacing (0028,0030)",
    POSITION: "ImagePositionPatient (0020,0032)", ORIENTATION: "ImageOrientationPatient (0020,0037)",
    ROWS: "Rows (0028,0010)", COLUMNS: "Columns (0028,0011)",
}
# Relative deviation of a slice gap from the median that is refused: ITK takes the z spacing from
# the first two slices, so this bounds the error of the volume's z spacing.
SPACING_TOLERANCE = 0.01
# In-plane drift of the slice origins that is taken as a gantry tilt (a shear of the stack) and
# corrected, as a fraction of a pixel over the whole series; smaller drifts are rounding.
SHEAR_TOLERANCE_PIXELS = 0.5
# Scatter of the slice origins around a straight line (in pixels) above which the slices are not
# one stack: two reconstructions or a stitched series under one SeriesInstanceUID.
SCATTER_TOLERANCE_PIXELS = 0.05


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
    stack: Stack | None = None  # where the sorted slices are (None for a single slice)

    @property
    def tilt_deg(self) -> float:
        return self.stack.tilt_deg if self.stack is not None else 0.0


@dataclass(frozen=True)
class Stack:
    """The sorted slices' geometry from their headers: first origin, axes and the step from one
    slice to the next, which a tilted gantry makes oblique to the slice normal."""

    origin: tuple[float, float, float]  # ImagePositionPatient of the first sorted slice
    row: tuple[float, float, float]  # direction of increasing column index
    column: tuple[float, float, float]  # direction of increasing row index
    normal: tuple[float, float, float]
    pixel: tuple[float, float]  # spacing along row, along column (mm)
    step: tuple[float, float, float]  # mean displacement from one slice to the next (mm)

    @property
    def gap(self) -> float:
        """The slice spacing along the normal: what the volume's z spacing must be."""
        return float(np.dot(self.step, self.normal))

    @property
    def shear(self) -> np.ndarray:
        """The in-plane part of the step (zero for an untilted series)."""
        return np.asarray(self.step) - self.gap * np.asarray(self.normal)

    @property
    def tilt_deg(self) -> float:
        return float(np.degrees(np.arctan2(np.linalg.norm(self.shear), self.gap)))


def read_slices(files: Sequence[str | Path]) -> sitk.Image:
    """Read checked slices, in the given order, into one volume (GDCM; SimpleITK applies the
    rescale slope and intercept). The one series reader of the archive and of `predict`; ITK's
    RuntimeError passes through for the caller to name its file."""
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(p) for p in files])
    return reader.Execute()


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
    _check_same_grid(headers)
    order = _slice_order(headers)
    stack = _stack(headers, order) if len(headers) > 1 else None
    return SeriesCheck(order=order, rescaled=rescaled[0], signed=signed, stack=stack)


def _check_same_grid(headers: Sequence[Header]) -> None:
    """Refuse slices whose pixel grid differs: ITK would stack them into one volume with the
    first slice's spacing (two reconstructions under one SeriesInstanceUID)."""
    def grid(header: Header) -> tuple:
        spacing = header.number(PIXEL_SPACING, 2)
        return (tuple(round(v, 4) for v in spacing), header.tags.get(ROWS, ""), header.tags.get(COLUMNS, ""))

    groups: dict[tuple, list[str]] = {}
    for header in headers:
        groups.setdefault(grid(header), []).append(header.name)
    if len(groups) > 1:
        listed = "; ".join(f"{len(names)} slice(s) of {rows}x{cols} pixels of {spacing[0]:g} x "
                           f"{spacing[1]:g} mm (e.g. {names[0]})"
                           for (spacing, rows, cols), names in groups.items())
        raise DicomTagError(f"the slices of one series differ in {TAG_NAMES[PIXEL_SPACING]} or matrix size: "
                            f"{listed}. Two reconstructions under one SeriesInstanceUID? Keep one of them "
                            "in a folder of its own")


def _stack(headers: Sequence[Header], order: list[int]) -> Stack:
    """The stack of sorted slices; refuse origins that do not lie on one straight line (not one
    reconstruction), accept a constant in-plane drift (gantry tilt) and describe it."""
    cosines = np.asarray(headers[0].number(ORIENTATION, 6))
    row, column = cosines[:3], cosines[3:]
    normal = np.cross(row, column)
    positions = np.asarray([headers[i].number(POSITION, 3) for i in order])
    dy, dx = headers[0].number(PIXEL_SPACING, 2)  # PixelSpacing is row spacing \ column spacing
    k = np.arange(len(positions), dtype=float)
    relative = positions - positions[0]
    step = np.linalg.lstsq(np.stack([k], axis=1), relative, rcond=None)[0][0]
    scatter = relative - np.outer(k, step)
    in_plane = np.abs(np.stack([scatter @ row / dx, scatter @ column / dy], axis=1)).max(axis=1)
    worst = int(np.argmax(in_plane))
    if in_plane[worst] > SCATTER_TOLERANCE_PIXELS:
        raise DicomTagError(
            f"{headers[order[worst]].name}: its {TAG_NAMES[POSITION]} is {in_plane[worst]:.2f} pixels off "
            "the line through the other slices' origins: the slices are not one reconstruction (a second "
            "reconstruction or a stitched series under one SeriesInstanceUID?); keep one in a folder of "
            "its own")
    stack = Stack(tuple(positions[0]), tuple(row), tuple(column), tuple(normal), (dx, dy), tuple(step))
    drift = stack.shear * (len(positions) - 1)
    if max(abs(drift @ row) / dx, abs(drift @ column) / dy) <= SHEAR_TOLERANCE_PIXELS:
        return Stack(stack.origin, stack.row, stack.column, stack.normal, stack.pixel,
                     tuple(stack.gap * normal))  # rounding in the positions, not a tilt
    return stack


def orthogonal(image: sitk.Image, check: SeriesCheck, label: bool = False) -> sitk.Image:
    """The series on an orthogonal grid with its true geometry.

    ITK places slice k at origin + k * |step| along the normal, but a tilted gantry steps along
    the table, obliquely: every slice is shifted in-plane by k times the shear, and the slice
    spacing along the normal is |step| cos(tilt), not |step|. This resamples (linear for a CT,
    nearest for a label; outside the scan: -1024 HU or 0) onto a grid with the slices' own
    in-plane axes and pixel size, the true spacing along the normal, and an in-plane extent
    that holds every shifted slice."""
    stack = check.stack
    if stack is None or not np.any(stack.shear):
        return image
    axes = np.stack([stack.row, stack.column, stack.normal], axis=1)
    origin = np.asarray(stack.origin)
    spacing = (stack.pixel[0], stack.pixel[1], stack.gap)
    source = sitk.Image(image)
    source.SetOrigin(tuple(origin))
    source.SetDirection(tuple(axes.ravel()))
    source.SetSpacing(spacing)  # each slice at its own origin, but for the in-plane shift
    size = image.GetSize()
    drift = stack.shear * (size[2] - 1)
    shift = np.array([drift @ axes[:, 0], drift @ axes[:, 1]])
    low = np.minimum(shift, 0.0)
    extent = np.array([(size[0] - 1) * spacing[0], (size[1] - 1) * spacing[1]]) + np.abs(shift)
    out_size = [int(np.ceil(extent[k] / spacing[k] - 1e-6)) + 1 for k in range(2)] + [size[2]]
    reference = sitk.Image(out_size, image.GetPixelID())
    reference.SetSpacing(spacing)
    reference.SetDirection(tuple(axes.ravel()))
    reference.SetOrigin(tuple(origin + low[0] * axes[:, 0] + low[1] * axes[:, 1]))
    # A point x of the true grid lies on slice k = (x - origin).n / gap, shifted by k * shear: in
    # the source's (unsheared) frame it is x - k * shear.
    transform = sitk.AffineTransform(3)
    transform.SetCenter(tuple(origin))
    transform.SetMatrix(tuple((np.eye(3) - np.outer(stack.shear, stack.normal) / stack.gap).ravel()))
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    fill = 0.0 if label else -1024.0
    return sitk.Resample(source, reference, transform, interpolator, fill, image.GetPixelID())


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
