"""One image file (NIfTI, or any format ITK reads), read only after its header can be trusted.

ITK reads what a header says without asking whether it makes sense, and each of these became a
wrong answer with exit code 0 or a misleading refusal:
- a file cut short is read with its missing voxels zero-filled (and segmented);
- a header declaring a huge image is allocated in full before anything else is checked;
- NIfTI's two geometries (sform and qform) that disagree are resolved silently, one mirrored
  patient away from the truth;
- a zero or negative pixdim is read as 1 mm or as a mirrored axis.
So the header is read first (nibabel, which parses NIfTI without touching the voxels), and the
file is refused naming the problem, or, for disagreeing forms, read with the one the user chose
(`--nifti-geometry`, config `data.nifti.geometry`). `predict` and `convert_nifti` both read here.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from varprune.data.itkerror import itk_reason

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GEOMETRY_CHOICES = ("sform", "qform")
# 2^30 voxels: a 1024 x 1024 x 1024 CT, 2 GiB as int16 and 4 GiB as float32 while preprocessed.
MAX_VOXELS = 1 << 30
# sform and qform are both float32 in the header: differences below these are rounding.
FORM_TOLERANCE_MM = 1e-2
FORM_TOLERANCE_COSINE = 1e-3
_CHUNK = 1 << 20


class ImageFileError(ValueError):
    """The file cannot be read as it says; the message names the file and the reason."""


@dataclass(frozen=True)
class Geometry:
    """Voxel-to-patient mapping in ITK's terms (LPS)."""

    spacing: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3 x 3, columns are the voxel axes
    origin: tuple[float, float, float]

    @classmethod
    def from_ras_affine(cls, affine: np.ndarray, shown: str, form: str) -> Geometry:
        """From a NIfTI (RAS) affine; refused unless it is a rotation times positive voxel sizes."""
        lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, dtype=float)[:3]
        axes, origin = lps[:, :3], lps[:, 3]
        spacing = np.linalg.norm(axes, axis=0)
        if not np.all(spacing > 0):
            raise ImageFileError(f"{shown}: its {form} gives a voxel size of zero ({_fmt(spacing)} mm)")
        direction = axes / spacing
        error = float(np.max(np.abs(direction.T @ direction - np.eye(3))))
        if error > FORM_TOLERANCE_COSINE:
            raise ImageFileError(f"{shown}: its {form} is not a rotation times voxel sizes (its axes are "
                                 f"sheared, off by {error:.3g} from orthonormal); ITK reads only "
                                 "orthonormal directions: resample the image onto an orthogonal grid")
        return cls(tuple(float(s) for s in spacing), tuple(float(v) for v in direction.ravel()),
                   tuple(float(v) for v in origin))

    def describe(self) -> str:
        axes = np.asarray(self.direction).reshape(3, 3)
        return (f"voxels {_fmt(self.spacing)} mm, axes {_axes_code(axes)}, origin {_fmt(self.origin)} mm "
                "(LPS)")

    def apply(self, image: sitk.Image) -> None:
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        image.SetOrigin(self.origin)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _axes_code(axes: np.ndarray) -> str:
    """Where each voxel axis points, as the letters of the LPS patient directions (`LPS`, `RAS`)."""
    letters = []
    for column in axes.T:
        k = int(np.argmax(np.abs(column)))
        letters.append("LPS"[k] if column[k] > 0 else "RAI"[k])
    return "".join(letters)


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _nifti_header(path: Path, shown: str):
    """The header as written (nibabel's own loading would quietly repair a zero or negative
    pixdim, which must be refused instead)."""
    from nibabel.nifti1 import Nifti1Header
    from nibabel.nifti2 import Nifti2Header

    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as stream:
            raw = stream.read(540)
    except (OSError, EOFError, zlib.error) as err:
        raise ImageFileError(f"{shown}: not a readable NIfTI file ({err})") from err
    for kind in (Nifti1Header, Nifti2Header):
        size = kind.sizeof_hdr
        for order in ("<", ">"):
            if len(raw) >= size and int.from_bytes(raw[:4], "little" if order == "<" else "big") == size:
                try:
                    return kind(raw[:size], endianness=order, check=False)
                except Exception as err:  # nibabel raises several kinds for a malformed header
                    raise ImageFileError(f"{shown}: not a readable NIfTI header ({err})") from err
    raise ImageFileError(f"{shown}: not a NIfTI file (no NIfTI-1 or NIfTI-2 header at its start"
                         f"{', it is shorter than a header' if len(raw) < 348 else ''})")


def _check_size(shape: tuple[int, ...], itemsize: int, shown: str, max_voxels: int) -> int:
    """The declared voxel count; refused above `max_voxels` before anything is allocated."""
    voxels = int(np.prod([max(1, int(d)) for d in shape], dtype=object))
    if voxels > max_voxels:
        raise ImageFileError(f"{shown}: the header declares {voxels:,} voxels (size "
                             f"{' x '.join(str(int(d)) for d in shape)}, "
                             f"{voxels * itemsize / 2**30:.1f} GiB), "
                             f"more than the {max_voxels:,} a CT can have here; a damaged header?")
    return voxels


def _gzip_bytes(path: Path, shown: str) -> tuple[int, bool]:
    """Decompressed size of a gzip file and whether its stream ends properly, in bounded memory
    (a chunk at a time, so that neither a long file nor a bomb is held)."""
    total, complete = 0, False
    with open(path, "rb") as fh:
        stream = zlib.decompressobj(wbits=31)
        while True:
            data = stream.unconsumed_tail or fh.read(_CHUNK)
            if not data:
                break
            try:
                total += len(stream.decompress(data, _CHUNK))
            except zlib.error as err:
                raise ImageFileError(f"{shown}: the gzip stream is damaged after {total:,} bytes "
                                     f"({err})") from err
            if stream.eof:
                complete = True
                rest = stream.unused_data + fh.read(2)
                if not rest.strip(b"\0"):
                    break
                stream = zlib.decompressobj(wbits=31)  # a further gzip member follows
                fh.seek(-len(rest), os.SEEK_CUR)
                complete = False
    return total, complete


def _bytes_present(path: Path, shown: str) -> tuple[int, bool]:
    """How many bytes the file holds (decompressed) and whether it ends where its format says."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size, True
    return _gzip_bytes(path, shown)


def _shortfall(path: Path, shown: str, offset: int, data_bytes: int) -> str | None:
    """What is missing from a file that holds fewer bytes than its header declares, or None."""
    needed = offset + data_bytes
    present, ended = _bytes_present(path, shown)
    if present >= needed and not ended:
        return ("the gzip stream stops without its end marker (the file was cut after its voxels, so "
                "its checksum cannot be verified)")
    if present < needed:
        missing = needed - present
        return (f"the file is cut short: the header declares {needed:,} bytes, the file holds {present:,} "
                f"({missing:,} missing, {100 * missing / max(1, data_bytes):.1f} % of the voxels)")
    return None


def check_complete(path: Path, shown: str, offset: int, data_bytes: int) -> None:
    """Refuse a file holding fewer bytes than its header declares (ITK would zero-fill the rest)."""
    problem = _shortfall(path, shown, offset, data_bytes)
    if problem:
        raise ImageFileError(f"{shown}: {problem}; copy it again")


def _pixdims(header, ndim: int, shown: str) -> None:
    pixdim = [float(v) for v in header["pixdim"][1:1 + min(3, ndim)]]
    for k, value in enumerate(pixdim, start=1):
        if not np.isfinite(value) or value <= 0:
            kind = "zero" if value == 0 else ("negative" if value < 0 else "not a number")
            raise ImageFileError(f"{shown}: pixdim[{k}] is {value:g} ({kind}): a voxel size must be "
                                 "positive (ITK would read zero as 1 mm and a negative size as a mirrored "
                                 "axis); correct the header")


def nifti_geometry(path: Path, shown: str, choice: str | None = None,
                   max_voxels: int = MAX_VOXELS) -> Geometry | None:
    """Check a NIfTI header; return the geometry to impose on ITK's reading, or None to keep
    ITK's. Refuses a declared size above `max_voxels`, a file cut short, invalid pixdim, and
    sform/qform that disagree unless `choice` names the one to follow."""
    if choice is not None and choice not in GEOMETRY_CHOICES:
        raise ValueError(f"the NIfTI geometry choice must be one of {', '.join(GEOMETRY_CHOICES)}, "
                         f"got {choice!r}")
    header = _nifti_header(path, shown)
    shape = tuple(int(d) for d in header.get_data_shape())
    itemsize = header.get_data_dtype().itemsize
    voxels = _check_size(shape, itemsize, shown, max_voxels)
    offset = max(int(header.get_data_offset()), int(header.sizeof_hdr))  # ITK's reading too
    check_complete(path, shown, offset, voxels * itemsize)
    _pixdims(header, len(shape), shown)
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    forms = {"sform": sform if sform_code else None, "qform": qform if qform_code else None}
    if choice is not None:
        if forms[choice] is None:
            present = [name for name, form in forms.items() if form is not None]
            raise ImageFileError(f"{shown}: has no {choice} (its {choice}_code is 0) to follow; "
                                 f"it has {', '.join(present) or 'neither form (pixdim only)'}")
        return Geometry.from_ras_affine(forms[choice], shown, choice)
    geometries = {name: Geometry.from_ras_affine(form, shown, name)  # refuses a sheared form
                  for name, form in forms.items() if form is not None}
    if len(geometries) < 2:
        return None  # one form or none: nothing contradicts it, and ITK follows it
    if not _same(geometries["sform"], geometries["qform"]):
        raise ImageFileError(
            f"{shown}: its sform and qform disagree: sform {geometries['sform'].describe()}, qform "
            f"{geometries['qform'].describe()}. Which is right cannot be told from the file; choose "
            "with --nifti-geometry sform|qform (predict) or data.nifti.geometry (pipeline)")
    return None


def _same(a: Geometry, b: Geometry) -> bool:
    return (np.allclose(a.spacing, b.spacing, rtol=0, atol=FORM_TOLERANCE_MM)
            and np.allclose(a.origin, b.origin, rtol=0, atol=FORM_TOLERANCE_MM)
            and np.allclose(a.direction, b.direction, rtol=0, atol=FORM_TOLERANCE_COSINE))


def read_image(path: str | os.PathLike, shown: str | None = None, nifti_choice: str | None = None,
               max_voxels: int = MAX_VOXELS,
               check_header: Callable[[sitk.ImageFileReader], None] | None = None) -> sitk.Image:
    """Read one image file after its header checks (NIfTI: all of the above; other formats:
    the declared size), then `check_header(reader)` (the caller's own, e.g. the dimension),
    all before a voxel is read. Errors name the file (`shown`, default the path) and ITK's
    reason."""
    path = Path(path)
    shown = shown or str(path)
    geometry = nifti_geometry(path, shown, nifti_choice, max_voxels) if is_nifti(path) else None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ImageFileError(f"{shown}: cannot read ({itk_reason(err)})") from err
    if not is_nifti(path):
        itemsize = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * reader.GetDimension(),
                                                                  reader.GetPixelID())).dtype).itemsize
        _check_size(tuple(reader.GetSize()), itemsize * reader.GetNumberOfComponents(), shown, max_voxels)
    if check_header is not None:
        check_header(reader)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ImageFileError(f"{shown}: cannot read ({itk_reason(err)})") from err
    if geometry is not None and image.GetDimension() == 3:
        geometry.apply(image)
        log.info("%s: geometry from its %s: %s", shown, nifti_choice, geometry.describe())
    return image


def write_complete(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write `image` to `path` (a temporary name: the caller renames it) and check that it is
    whole. ITK's NIfTI writer does not fail when the disk fills or a file-size limit hits: it
    prints "NWAD: wrote only 0 of N bytes" and returns, leaving a cut file that would be renamed
    into place as complete. So a NIfTI is checked against its own header afterwards (other
    formats raise through ITK)."""
    path = Path(path)
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as err:
        raise OSError(f"{path}: cannot write ({itk_reason(err)})") from err
    if is_nifti(path):
        header = _nifti_header(path, str(path))
        voxels = int(np.prod([max(1, int(d)) for d in header.get_data_shape()]))
        offset = max(int(header.get_data_offset()), int(header.sizeof_hdr))
        problem = _shortfall(path, str(path), offset, voxels * header.get_data_dtype().itemsize)
        if problem:
            raise OSError(errno.EFBIG, f"written incompletely (disk full or a file-size limit?): {problem}",
                          str(path))
