"""Is this an adult abdominal CT as scanners write it, and is the liver found a plausible one?

A header can be valid and still wrong: in-plane spacing scaled by 0.55 (a child-sized body, or a
wrong PixelSpacing) made an 8 ml liver out of a ~400 ml one with exit code 0. These checks do
not refuse (children and odd protocols exist); they warn, and `predict` writes the findings into
the sidecar JSON next to the mask so that a batch user can filter on them. `preprocess` logs the
CT checks of every case. The ranges are wide on purpose: every case of the default synthetic
archive and ordinary adult CTs pass them without a warning.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import SimpleITK as sitk

from varprune.data.preprocess import PreprocessError, body_box, canonical

log = logging.getLogger(__name__)

# What CT scanners write: in-plane pixels from a 0.2 mm zoomed reconstruction to a 2 mm 256-matrix
# one, slices from 0.3 to 10 mm.
IN_PLANE_MM = (0.2, 2.0)
SLICE_MM = (0.3, 10.0)
# The body's larger in-plane extent (lateral width of an abdomen): thin to very large adults.
BODY_WIDTH_MM = (200.0, 600.0)
# A liver that the scan covers at least in part, up to marked hepatomegaly.
LIVER_ML = (200.0, 4000.0)
BODY_THRESHOLD_HU = -500.0


@dataclass(frozen=True)
class Finding:
    """One value outside its plausible range."""

    check: str  # in_plane_spacing | slice_spacing | body_width | liver_volume
    value: float
    low: float
    high: float
    unit: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def _outside(check: str, value: float, limits: tuple[float, float], unit: str, what: str,
             why: str) -> list[Finding]:
    low, high = limits
    if low <= value <= high:
        return []
    side = "below" if value < low else "above"
    message = (f"{what} is {value:.4g} {unit}, {side} the {low:g}-{high:g} {unit} expected: {why}")
    return [Finding(check, float(value), low, high, unit, message)]


def check_ct(ct: sitk.Image, body_threshold_hu: float = BODY_THRESHOLD_HU) -> list[Finding]:
    """Voxel spacing and body width of a CT in HU, whatever its stored orientation."""
    axial = canonical(ct) if ct.GetDimension() == 3 else ct
    spacing = axial.GetSpacing()
    findings = []
    for k, name in enumerate("xy"):
        findings += _outside("in_plane_spacing", spacing[k], IN_PLANE_MM, "mm", f"the {name} pixel spacing",
                             "not what a CT scanner writes; is the spacing in the header right?")
    if axial.GetDimension() == 3 and axial.GetSize()[2] > 1:
        findings += _outside("slice_spacing", spacing[2], SLICE_MM, "mm", "the slice spacing",
                             "not what a CT scanner writes; is the slice spacing in the header right?")
    try:
        x0, x1, y0, y1 = body_box(axial, body_threshold_hu)
    except PreprocessError:
        return findings  # no body at all: the HU checks say so
    width = max((x1 - x0 + 1) * spacing[0], (y1 - y0 + 1) * spacing[1])
    findings += _outside("body_width", width, BODY_WIDTH_MM, "mm", "the body's width",
                         "outside adult sizes; a child, a wrong pixel spacing, or not an abdomen? The "
                         "model was trained on adults")
    return findings


def check_liver(volume_ml: float) -> list[Finding]:
    """The segmented liver's volume."""
    return _outside("liver_volume", volume_ml, LIVER_ML, "ml", "the liver found",
                    "too small or too large for an adult liver the scan covers; check the mask and the "
                    "input's geometry")


def report(findings: list[Finding], source: str) -> list[Finding]:
    """Log every finding as a warning naming the source; return them."""
    for finding in findings:
        log.warning("%s: %s", source, finding.message)
    return findings
