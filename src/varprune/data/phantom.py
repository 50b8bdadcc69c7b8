"""Abdominal CT phantoms in which finding the liver takes shape and context, not a threshold.

Why it is built this way: an easy phantom (a bright blob on a dark background) cannot tell a
good segmenter from a threshold, nor one pruning method from another. So the liver here
- touches the abdominal wall muscle, the right kidney, the inferior vena cava and the heart,
  which have liver-like HU, so the largest connected component of any HU window leaks;
- has a contrast (enhancement phase) that changes from patient to patient, as do the other
  organs, so no single HU window fits every patient;
- carries hypodense tumours and bright vessels inside, so a window also cuts holes in it;
- has a smooth random shape with two lobes, and the image has noise and partial-volume blur.
`benchmarks/data.py` measures the result: an intensity baseline must stay below Dice 0.75.

Coordinates: x along image columns (towards the patient's left), y along rows (towards the
back), z along slices (towards the head), all in mm, origin at the volume centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

#: Label codes of the phantom's structures (also the values of LABELLED_DICOM).
LABELS: dict[str, int] = {
    "body": 1,
    "fat": 2,
    "muscle": 3,
    "bone": 4,
    "liver": 5,
    "livertumor": 6,
    "portalvein": 7,
    "venacava": 8,
    "aorta": 9,
    "rightkidney": 10,
    "leftkidney": 11,
    "spleen": 12,
    "stomach": 13,
    "heart": 14,
    "bowel": 15,
}


@dataclass
class Phantom:
    """One synthetic patient: HU volume, structure masks and geometry (arrays are z, y, x)."""

    hu: np.ndarray  # int16, HU
    masks: dict[str, np.ndarray]  # name -> bool volume; "liver" includes tumours and vessels
    labels: np.ndarray  # uint8, one code per voxel (LABELS), the last drawn structure wins
    spacing: tuple[float, float, float]  # (x, y, z) mm
    origin: tuple[float, float, float]  # (x, y, z) mm of voxel (0, 0, 0)
    tumours: list[np.ndarray] = field(default_factory=list)  # one bool volume per tumour


def _ellipsoid(x, y, z, centre, axes) -> np.ndarray:
    """Normalised radius of an axis-aligned ellipsoid: < 1 inside."""
    return np.sqrt(
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    )


def _smooth_field(rng: np.random.Generator, x, y, z, scale_mm: float, terms: int = 6) -> np.ndarray:
    """A smooth random field of roughly unit amplitude: a few random plane waves."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
    for _ in range(terms):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / (scale_mm * rng.uniform(0.7, 1.5))
        phase = rng.uniform(0, 2 * np.pi)
        out += np.cos(k * (direction[0] * x + direction[1] * y + direction[2] * z) + phase)
    return out / np.sqrt(terms / 2)


def _softmin(a: np.ndarray, b: np.ndarray, k: float = 0.15) -> np.ndarray:
    """Smooth minimum, so that the union of two lobes has no crease."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _tube(x, y, z, rng: np.random.Generator, start, end, radius: float) -> np.ndarray:
    """A gently curved tube from `start` to `end` (mm), as a bool mask."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    bend = rng.normal(scale=8.0, size=3)
    mask = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
    for t in np.linspace(0, 1, 24):
        p = start + (end - start) * t + bend * np.sin(np.pi * t)
        mask |= (x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2 < radius**2
    return mask


# The drawing helpers below all take the one generator of a phantom and must draw from it in a
# fixed order (the order `make_phantom` calls them in): a phantom is defined by its seed.


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in mm; x, y, z and t broadcast to the (z, y, x) volume."""

    xc: np.ndarray
    yc: np.ndarray
    zc: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    t: np.ndarray  # 0 at the lowest slice, 1 at the highest
    fov: float
    dxy: float
    dz: float
    height: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.zc), len(self.yc), len(self.xc))

    def full(self, mask: np.ndarray) -> np.ndarray:
        """`mask` broadcast to the whole volume, so that masks that do not vary along z combine."""
        return np.broadcast_to(mask, self.shape)


@dataclass
class _Canvas:
    """The HU and label volumes being drawn; the last structure painted wins."""

    hu: np.ndarray  # float32 until the scan
    labels: np.ndarray  # uint8

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> _Canvas:
        """Air everywhere, no label."""
        return cls(hu=np.full(shape, -1000.0, dtype=np.float32), labels=np.zeros(shape, dtype=np.uint8))

    def paint(self, mask: np.ndarray, value, name: str) -> None:
        """Give the voxels of `mask` the HU `value` (a number or one per voxel) and the label of `name`."""
        self.hu[mask] = value
        self.labels[mask] = LABELS[name]


@dataclass(frozen=True)
class _Body:
    """The body outline and its half-axes, relative to which the organs are placed."""

    a: float  # half-width, mm
    b: float  # half-depth, mm
    body: np.ndarray
    inner: np.ndarray  # abdominal cavity
    wall: np.ndarray  # abdominal wall muscle


@dataclass(frozen=True)
class _Spine:
    """The structures at the back that the liver must not overlap."""

    centre: tuple[float, float]  # (x, y) mm of the vertebral body
    vertebra: np.ndarray
    psoas: np.ndarray
    aorta: np.ndarray


@dataclass
class _Liver:
    """The liver mask and its vertical placement (mm), which its neighbours follow."""

    mask: np.ndarray
    lz: float  # height of the lobes' centre
    lh: float  # vertical half-axis of the right lobe


@dataclass(frozen=True)
class _Organs:
    """The liver's neighbours (several with liver-like HU)."""

    heart: np.ndarray
    rkidney: np.ndarray
    lkidney: np.ndarray
    spleen: np.ndarray
    stomach: np.ndarray
    ivc: np.ndarray


def _draw_grid(rng: np.random.Generator, size: int, slices: tuple[int, int]) -> _Grid:
    """Field of view, slice spacing and slice count vary per patient, as in a real cohort."""
    n_slices = int(rng.integers(slices[0], slices[1] + 1))
    fov = rng.uniform(300.0, 420.0)
    dxy = fov / size
    dz = float(rng.choice([1.6, 2.0, 2.5, 3.0, 4.0, 5.0]))
    # Thin-slice patients cover less of the abdomen; the liver still fills most of the volume.
    height = n_slices * dz
    zc = (np.arange(n_slices) - (n_slices - 1) / 2) * dz
    yc = (np.arange(size) - (size - 1) / 2) * dxy
    xc = (np.arange(size) - (size - 1) / 2) * dxy
    z, y, x = zc[:, None, None], yc[None, :, None], xc[None, None, :]
    return _Grid(xc=xc, yc=yc, zc=zc, x=x, y=y, z=z, t=z / height + 0.5, fov=fov, dxy=dxy, dz=dz,
                 height=height)


def _tissue_values(rng: np.random.Generator) -> dict[str, float]:
    """Patient-specific HU: the enhancement phase moves the organs together and apart."""
    liver_hu = rng.uniform(40, 150)
    return {
        "fat": rng.uniform(-115, -80),
        "muscle": rng.uniform(40, 75),
        "liver": liver_hu,
        "spleen": liver_hu + rng.uniform(-10, 15),
        "kidney": liver_hu + rng.uniform(-10, 20),
        "venacava": liver_hu + rng.uniform(-15, 20),
        "heart": liver_hu + rng.uniform(-15, 15),
        "portalvein": liver_hu + rng.uniform(40, 90),
        "aorta": rng.uniform(150, 280),
        "bone": rng.uniform(350, 650),
        "stomach": rng.uniform(5, 35),
        "bowel": rng.uniform(20, 90),
        "tumour": liver_hu - rng.uniform(35, 70),
    }


def _draw_body(rng: np.random.Generator, g: _Grid, hu_of: dict[str, float], canvas: _Canvas) -> _Body:
    """Body ellipse changing slowly along z, subcutaneous fat, a muscle wall, bowel in visceral fat."""
    x, y, z, t = g.x, g.y, g.z, g.t
    a = rng.uniform(0.36, 0.44) * g.fov  # half-width; organs are placed relative to a and b
    b = rng.uniform(0.26, 0.31) * g.fov
    body_r = np.sqrt((x / (a * (1 + 0.04 * (t - 0.5)))) ** 2 + ((y - rng.uniform(-5, 5)) / b) ** 2)
    body_r = body_r + 0.015 * _smooth_field(rng, x, y, z, 120.0)
    body = g.full(body_r < 1.0)
    fat_thick = rng.uniform(0.05, 0.11)
    wall_thick = rng.uniform(0.035, 0.06)
    inner = g.full(body_r < 1.0 - fat_thick - wall_thick)  # abdominal cavity
    wall = g.full(body_r < 1.0 - fat_thick) & ~inner

    canvas.paint(body, hu_of["fat"], "fat")
    canvas.paint(wall, hu_of["muscle"], "muscle")
    # Visceral fat with bowel loops in it.
    canvas.hu[inner] = hu_of["fat"] + 15
    bowel = inner & (_smooth_field(rng, x, y, z, 60.0, terms=8) > 0.4)
    canvas.paint(bowel, hu_of["bowel"], "bowel")
    air = bowel & (_smooth_field(rng, x, y, z, 25.0) > 1.3)
    canvas.hu[air] = -850
    return _Body(a=a, b=b, body=body, inner=inner, wall=wall)


def _draw_spine(rng: np.random.Generator, g: _Grid, body: _Body, hu_of: dict[str, float],
                canvas: _Canvas) -> _Spine:
    """Spine, paraspinal muscles and the aorta at the back; ribs in the body wall."""
    x, y, z, fov = g.x, g.y, g.z, g.fov
    spine_c = (rng.uniform(-6, 6), 0.66 * body.b)
    r_spine = np.sqrt((x - spine_c[0]) ** 2 + (y - spine_c[1]) ** 2)
    vertebra = g.full(r_spine < 0.05 * fov)
    canal = g.full(np.sqrt((x - spine_c[0]) ** 2 + (y - spine_c[1] - 0.06 * fov) ** 2) < 0.022 * fov)
    psoas = (np.sqrt(((np.abs(x - spine_c[0]) - 0.1 * fov) / (0.05 * fov)) ** 2
                     + ((y - spine_c[1] + 0.01 * fov) / (0.045 * fov)) ** 2) < 1) & body.inner
    canvas.paint(psoas, hu_of["muscle"], "muscle")
    canvas.paint(vertebra, hu_of["bone"], "bone")
    canvas.hu[canal] = 25
    aorta_c = (spine_c[0] + 0.035 * fov, spine_c[1] - 0.11 * fov)
    aorta = g.full((x - aorta_c[0]) ** 2 + (y - aorta_c[1]) ** 2 < (0.028 * fov) ** 2)
    canvas.paint(aorta, hu_of["aorta"], "aorta")
    # Ribs: short bright arcs inside the body wall on both sides.
    rib_phase = rng.uniform(0, 2 * np.pi)
    ribs = (body.wall & (np.cos(2 * np.pi * z / rng.uniform(25, 40) + rib_phase) > 0.7)
            & (np.abs(x) > 0.4 * body.a))
    canvas.paint(ribs, hu_of["bone"] * 0.8, "bone")
    return _Spine(centre=spine_c, vertebra=vertebra, psoas=psoas, aorta=aorta)


def _liver_shape(rng: np.random.Generator, g: _Grid, body: _Body, spine: _Spine) -> _Liver:
    """A right lobe against the right wall, a left lobe reaching across the midline, their smooth
    union and a random bumpy surface, in the upper part of the volume: no simple shape prior fits."""
    x, y, z, a, b = g.x, g.y, g.z, body.a, body.b
    lz = (rng.uniform(0.55, 0.68) - 0.5) * g.height
    lh = rng.uniform(0.33, 0.42) * g.height
    right = _ellipsoid(x, y, z, (-0.52 * a, rng.uniform(-0.05, 0.1) * b, lz),
                       (rng.uniform(0.42, 0.55) * a, rng.uniform(0.6, 0.8) * b, lh))
    left = _ellipsoid(x, y, z, (rng.uniform(0.0, 0.15) * a, -0.35 * b, lz + 0.15 * lh),
                      (rng.uniform(0.35, 0.5) * a, rng.uniform(0.25, 0.38) * b, 0.7 * lh))
    liver_r = _softmin(right, left) + 0.09 * _smooth_field(rng, x, y, z, 90.0)
    mask = (liver_r < 1.0) & body.inner & ~spine.psoas & ~spine.aorta & ~spine.vertebra
    return _Liver(mask=mask, lz=lz, lh=lh)


def _draw_neighbours(rng: np.random.Generator, g: _Grid, body: _Body, spine: _Spine, liver: _Liver,
                     hu_of: dict[str, float], canvas: _Canvas) -> _Organs:
    """Neighbours with liver-like HU that touch the liver, so that no HU window isolates it: heart
    above the dome, right kidney below and behind, vena cava at the back (returned, not yet drawn),
    spleen on the other side."""
    x, y, z, a, b, inner = g.x, g.y, g.z, body.a, body.b, body.inner
    lz, lh = liver.lz, liver.lh
    heart = (_ellipsoid(x, y, z, (0.05 * a, -0.15 * b, lz + 0.85 * lh),
                        (0.45 * a, 0.5 * b, 0.45 * lh)) < 1) & inner & ~liver.mask
    kidney_axes = (0.13 * a, 0.22 * b, rng.uniform(0.25, 0.35) * g.height)
    rkidney = (_ellipsoid(x, y, z, (-0.38 * a, 0.42 * b, lz - 0.6 * lh), kidney_axes) < 1) & inner
    lkidney = (_ellipsoid(x, y, z, (0.4 * a, 0.48 * b, lz - 0.6 * lh), kidney_axes) < 1) & inner
    spleen = (_ellipsoid(x, y, z, (0.55 * a, 0.2 * b, lz + rng.uniform(-0.1, 0.2) * lh),
                         (0.25 * a, 0.38 * b, 0.5 * lh)) < 1) & inner
    stomach = (_ellipsoid(x, y, z, (0.35 * a, -0.3 * b, lz + 0.1 * lh),
                          (0.25 * a, 0.25 * b, 0.4 * lh)) < 1) & inner & ~spleen
    spine_c, fov = spine.centre, g.fov
    ivc = ((x - (spine_c[0] - 0.06 * fov)) ** 2 + (y - (spine_c[1] - 0.12 * fov)) ** 2
           < (0.03 * fov) ** 2) & inner & (g.t < 0.95)
    canvas.paint(stomach, hu_of["stomach"], "stomach")
    canvas.paint(spleen, hu_of["spleen"], "spleen")
    canvas.paint(lkidney, hu_of["kidney"], "leftkidney")
    canvas.paint(rkidney & ~liver.mask, hu_of["kidney"], "rightkidney")
    canvas.paint(heart, hu_of["heart"], "heart")
    return _Organs(heart=heart, rkidney=rkidney, lkidney=lkidney, spleen=spleen, stomach=stomach, ivc=ivc)


def _draw_liver_tissue(rng: np.random.Generator, g: _Grid, liver: np.ndarray, hu_of: dict[str, float],
                       canvas: _Canvas) -> None:
    """Liver parenchyma with texture and a slow perfusion gradient: not one HU value."""
    texture = (6.0 * _smooth_field(rng, g.x, g.y, g.z, 30.0)
               + 12.0 * _smooth_field(rng, g.x, g.y, g.z, 250.0, terms=3))
    canvas.paint(liver, (hu_of["liver"] + texture)[liver], "liver")


def _draw_vessels(rng: np.random.Generator, g: _Grid, body: _Body, liver: _Liver, hu_of: dict[str, float],
                  canvas: _Canvas) -> np.ndarray:
    """Bright portal vessels from the hilum into the liver (part of the liver mask): holes for a window."""
    a, b, lz, lh = body.a, body.b, liver.lz, liver.lh
    vessels = np.zeros_like(liver.mask)
    hilum = (-0.3 * a, 0.1 * b, lz - 0.2 * lh)
    for _ in range(int(rng.integers(2, 5))):
        end = (-0.52 * a + rng.uniform(-0.3, 0.3) * a, rng.uniform(-0.4, 0.4) * b,
               lz + rng.uniform(-0.6, 0.6) * lh)
        vessels |= _tube(g.x, g.y, g.z, rng, hilum, end, rng.uniform(2.5, 5.0))
    vessels &= liver.mask
    canvas.paint(vessels, hu_of["portalvein"], "portalvein")
    return vessels


def _draw_tumours(rng: np.random.Generator, g: _Grid, liver: np.ndarray, hu_of: dict[str, float],
                  canvas: _Canvas) -> list[np.ndarray]:
    """Zero to three dark tumours centred in the liver (and part of its mask); one mask each."""
    tumours: list[np.ndarray] = []
    if rng.random() < 0.75:
        inside = np.argwhere(liver)
        for _ in range(int(rng.integers(1, 4))):
            k, j, i = inside[rng.integers(len(inside))]
            r = rng.uniform(6.0, 22.0)
            tumour = (_ellipsoid(g.x, g.y, g.z, (g.xc[i], g.yc[j], g.zc[k]),
                                 (r, r * rng.uniform(0.7, 1.3), max(r, g.dz))) < 1) & liver
            if tumour.any():
                tumours.append(tumour)
                canvas.paint(tumour, hu_of["tumour"] + rng.uniform(-10, 10), "livertumor")
    return tumours


def _scan(rng: np.random.Generator, g: _Grid, hu: np.ndarray) -> np.ndarray:
    """Partial-volume blur, then noise whose level differs per patient (dose, reconstruction); int16 HU."""
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((g.dxy, g.dxy, g.dz))
    hu = sitk.GetArrayFromImage(
        sitk.SmoothingRecursiveGaussian(img, sigma=(0.8 * g.dxy, 0.8 * g.dxy, 0.4 * g.dz)))
    hu += rng.normal(scale=rng.uniform(12.0, 30.0), size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def make_phantom(
    seed: int, patient: int, size: int = 256, slices: tuple[int, int] = (24, 40)
) -> Phantom:
    """Draw patient `patient` of the synthetic cohort `seed`; deterministic in both."""
    rng = np.random.default_rng([seed, patient])
    g = _draw_grid(rng, size, slices)
    hu_of = _tissue_values(rng)
    canvas = _Canvas.empty(g.shape)
    body = _draw_body(rng, g, hu_of, canvas)
    spine = _draw_spine(rng, g, body, hu_of, canvas)
    liver = _liver_shape(rng, g, body, spine)
    organs = _draw_neighbours(rng, g, body, spine, liver, hu_of, canvas)
    # The liver is drawn before the vena cava: the cava runs through its back, as in patients.
    liver.mask &= ~organs.ivc
    _draw_liver_tissue(rng, g, liver.mask, hu_of, canvas)
    canvas.paint(organs.ivc, hu_of["venacava"], "venacava")
    # Inside the liver: portal vessels (bright) and tumours (dark), both part of the liver mask.
    vessels = _draw_vessels(rng, g, body, liver, hu_of, canvas)
    tumours = _draw_tumours(rng, g, liver.mask, hu_of, canvas)
    hu = _scan(rng, g, canvas.hu)

    masks = {
        "liver": liver.mask,
        "portalvein": vessels,
        "venacava": organs.ivc,
        "aorta": spine.aorta & body.body,
        "rightkidney": organs.rkidney & ~liver.mask,
        "leftkidney": organs.lkidney,
        "spleen": organs.spleen,
        "stomach": organs.stomach,
        "heart": organs.heart,
        "bone": canvas.labels == LABELS["bone"],
        "skin": body.body,
    }
    origin = (float(g.xc[0]), float(g.yc[0]), float(g.zc[0]) + 1000.0)
    return Phantom(hu=hu, masks=masks, labels=canvas.labels, spacing=(g.dxy, g.dxy, g.dz), origin=origin,
                   tumours=tumours)
