"""Hostile-but-realistic inputs, built from a good archive: DICOM edits (orientation, missing or
inconsistent tags), damaged and oversized zips. Used by tests/test_real_inputs.py and by
benchmarks/robustness.py, so that the probe set is defined once."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from varprune.data.archive import is_debris

from .conftest import rewrite_inner

Members = dict[str, bytes]
FLIPS = {"LPS": (False, False, False), "RAS": (True, True, False), "RPS": (True, False, False),
         "LAS": (False, True, False), "LPI": (False, False, True)}


Change = Callable[[str, pydicom.Dataset], pydicom.Dataset | None]


def edit_slices(change: Change) -> Callable[[Members], Members]:
    """Apply `change(name, dataset)` to every slice; None drops the slice."""
    def edit(members: Members) -> Members:
        out = {}
        for name, data in members.items():
            if not is_slice(name):
                out[name] = data
                continue
            changed = change(name, pydicom.dcmread(io.BytesIO(data)))
            if changed is not None:
                buffer = io.BytesIO()
                changed.save_as(buffer)
                out[name] = buffer.getvalue()
        return out
    return edit


def is_slice(name: str) -> bool:
    return "image_" in Path(name).name and not is_debris(name)


def slice_number(name: str) -> int:
    return int(name.rsplit("image_", 1)[1])


def flip(flips: tuple[bool, bool, bool]) -> Callable[[Members], Members]:
    """Store every slice mirrored along x and/or y (direction cosines and position follow, so the
    patient stays where it is), and/or the files in head-to-feet order."""
    def change(name: str, ds: pydicom.Dataset) -> pydicom.Dataset:
        pixels = ds.pixel_array
        position = [float(v) for v in ds.ImagePositionPatient]
        cosines = [float(v) for v in ds.ImageOrientationPatient]
        dy, dx = (float(v) for v in ds.PixelSpacing)
        if flips[0]:
            pixels = pixels[:, ::-1]
            position[0] += (ds.Columns - 1) * dx * cosines[0]
            cosines[0:3] = [-c for c in cosines[0:3]]
        if flips[1]:
            pixels = pixels[::-1, :]
            position[1] += (ds.Rows - 1) * dy * cosines[4]
            cosines[3:6] = [-c for c in cosines[3:6]]
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:g}" for v in cosines]
        return ds

    def edit(members: Members) -> Members:
        out = edit_slices(change)(members)
        if not flips[2]:
            return out
        by_folder: dict[str, list[str]] = {}
        for name in out:
            if is_slice(name):
                by_folder.setdefault(name.rsplit("image_", 1)[0], []).append(name)
        renamed = {n: d for n, d in out.items() if not is_slice(n)}
        for folder, names in by_folder.items():  # image_k gets the slice of image_{n-1-k}
            last = max(slice_number(n) for n in names)
            for name in names:
                renamed[f"{folder}image_{last - slice_number(name)}"] = out[name]
        return renamed
    return edit


def archive_with(archive: Path, out: Path, patient: int, edit: Callable[[Members], Members],
                 masks_too: bool = False) -> Path:
    """`archive` with one patient's CT series (and masks, with `masks_too`) passed through `edit`."""
    rewrite_inner(archive, out, patient, "PATIENT_DICOM.zip", edit)
    if masks_too:
        rewrite_inner(out, out.with_name(f"m-{out.name}"), patient, "MASKS_DICOM.zip", edit)
        os.replace(out.with_name(f"m-{out.name}"), out)
    return out


def drop(*keywords: str, only: int | None = None):
    def change(name: str, ds: pydicom.Dataset) -> pydicom.Dataset:
        if only is None or slice_number(name) == only:
            for keyword in keywords:
                if keyword in ds:
                    delattr(ds, keyword)
        return ds
    return edit_slices(change)


def set_tag(keyword: str, value, only: int | None = None):
    def change(name: str, ds: pydicom.Dataset) -> pydicom.Dataset:
        if only is None or slice_number(name) == only:
            setattr(ds, keyword, value)
        return ds
    return edit_slices(change)


def same_position(k: int, as_slice: int):
    def edit(members: Members) -> Members:
        source = next(d for n, d in members.items() if is_slice(n) and slice_number(n) == as_slice)
        position = pydicom.dcmread(io.BytesIO(source)).ImagePositionPatient
        return set_tag("ImagePositionPatient", position, only=k)(members)
    return edit


def without_slice(k: int):
    return edit_slices(lambda name, ds: None if slice_number(name) == k else ds)


def stored_as_hu(members: Members) -> Members:
    """Signed HU values with no rescale tags, as some exporters write them."""
    def change(name: str, ds: pydicom.Dataset) -> pydicom.Dataset:
        hu = ds.pixel_array.astype(np.int32) + int(float(ds.RescaleIntercept))
        ds.PixelRepresentation = 1
        ds.PixelData = hu.astype(np.int16).tobytes()
        del ds.RescaleIntercept, ds.RescaleSlope
        return ds
    return edit_slices(change)(members)


def corrupt_deflate(members: Members) -> bytes:
    """The inner zip with bytes in the middle of one member's compressed stream overwritten."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = next(i for i in zf.infolist() if is_slice(i.filename) and i.compress_size > 64)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 8:start + 40] = b"\xff" * 32
    return bytes(data)


def bomb(members: Members) -> Members:
    return {**members, "PATIENT_DICOM/bomb.dcm": bytes(100 * 2**20)}  # 100 MB of zeros, ~100 kB zipped




def link_member(members: Members) -> bytes:
    """The inner zip plus a member that is a symbolic link to /etc."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for member, content in members.items():
            zf.writestr(member, content)
        info = zipfile.ZipInfo("PATIENT_DICOM/sub")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc")
    return buffer.getvalue()


# ---- what scanners really write (issue 28) ----

def tilted(degrees: float) -> Callable[[Members], Members]:
    """A gantry tilt: slice planes rotated about x while ImagePositionPatient keeps stepping along
    the table (z), as a tilted acquisition writes it. Pixels are unchanged, so the true voxel is
    dx * dy * gap * cos(tilt) and the true slice k lies at its own position."""
    angle = np.radians(degrees)

    def change(name: str, ds: pydicom.Dataset) -> pydicom.Dataset:
        ds.ImageOrientationPatient = ["1", "0", "0", "0", f"{np.cos(angle):.6f}", f"{np.sin(angle):.6f}"]
        return ds
    return edit_slices(change)


def mixed_reconstructions(members: Members) -> Members:
    """Every other slice from a second, zoomed reconstruction (PixelSpacing x 0.6, its own
    positions halfway between) under the same SeriesInstanceUID."""
    def change(name: str, ds: pydicom.Dataset) -> pydicom.Dataset:
        if slice_number(name) % 2:
            ds.PixelSpacing = [f"{float(v) * 0.6:.6f}" for v in ds.PixelSpacing]
        return ds
    return edit_slices(change)(members)


def shifted_origins(members: Members) -> Members:
    """Every other slice with its in-plane origin 20 mm to the side (same pixel spacing): two
    reconstructions centred differently, interleaved."""
    def change(name: str, ds: pydicom.Dataset) -> pydicom.Dataset:
        if slice_number(name) % 2:
            position = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [f"{position[0] + 20:.4f}", f"{position[1]:.4f}", f"{position[2]:.4f}"]
        return ds
    return edit_slices(change)(members)


def ct_folder(archive: Path, out: Path, patient: int, prefix: str = "") -> Path:
    """One patient's CT slices from an IRCADb-layout `archive` as a plain folder (names prefixed)."""
    with zipfile.ZipFile(archive) as outer:
        inner = next(n for n in outer.namelist() if n.endswith(f"3Dircadb1.{patient}/PATIENT_DICOM.zip"))
        with zipfile.ZipFile(io.BytesIO(outer.read(inner))) as members:
            out.mkdir(parents=True, exist_ok=True)
            for name in members.namelist():
                if is_slice(name):
                    (out / f"{prefix}{Path(name).name}").write_bytes(members.read(name))
    return out


def nifti_bytes(path: Path) -> tuple[object, bytes]:
    """The header (nibabel) and the raw voxel bytes of an uncompressed or gzipped NIfTI."""
    import gzip

    from nibabel.nifti1 import Nifti1Header

    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    header = Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)  # as written: vox_offset kept
    return header, raw[int(header.get_data_offset()):]


def write_nifti(path: Path, header, data: bytes) -> Path:
    """`header` (edited as is: no field recomputed) and `data` as a .nii or .nii.gz file."""
    import gzip

    header = header.copy()
    header.set_data_offset(352)
    raw = header.binaryblock + b"\0" * 4 + data
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.name.endswith(".gz") else raw)
    return path


def forms_disagree(source: Path, out: Path) -> Path:
    """The qform as in `source`, the sform mirrored left-right (both coded): which is right?"""
    header, data = nifti_bytes(source)
    qform = header.get_qform()
    mirrored = qform @ np.diag([-1.0, 1.0, 1.0, 1.0])
    mirrored[:3, 3] = qform[:3, 3] + qform[:3, 0] * (header.get_data_shape()[0] - 1)
    header.set_qform(qform, code=1)
    header.set_sform(mirrored, code=1)
    return write_nifti(out, header, data)


def with_pixdim(source: Path, out: Path, value: float) -> Path:
    """pixdim[1] set to `value` (zero or negative), both forms switched off as old writers do."""
    header, data = nifti_bytes(source)
    header.set_qform(None, code=0)
    header.set_sform(None, code=0)
    header["pixdim"][1] = value
    return write_nifti(out, header, data)


def cut(source: Path, out: Path, share: float = 0.7) -> Path:
    """The file's first `share` of bytes (a .nii.gz is cut in its compressed stream)."""
    raw = source.read_bytes()
    out.write_bytes(raw[: int(len(raw) * share)])
    return out


def huge_header(out: Path, shape: tuple[int, int, int] = (30000, 30000, 1000)) -> Path:
    """A tiny gzipped NIfTI whose header declares `shape` int16 voxels (1.8 TB)."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    return write_nifti(out, header, bytes(4096))


def scaled_in_plane(source: Path, out: Path, factor: float = 0.55) -> Path:
    """The same voxels with the in-plane spacing times `factor` (a child-sized body)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(source))
    spacing = image.GetSpacing()
    image.SetSpacing((spacing[0] * factor, spacing[1] * factor, spacing[2]))
    sitk.WriteImage(image, str(out))
    return out
