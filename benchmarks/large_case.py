"""Memory benchmark: peak RSS of preprocessing and evaluating one LiTS-sized CT.

Run: python benchmarks/large_case.py [--slices 200 500 1000] [--size 512] [--steps preprocess evaluate]
For every size it writes a synthetic CT (int16: air at -1000 around an elliptic body of
0 to 60 HU, a liver blob, spacing 0.7 x 0.7 x 1 mm, stored RAS like most converted NIfTIs)
and its liver mask as .nii.gz in a temp folder (slab by slab, in this process), then runs each
step in a fresh Python process so that the peak resident memory is that step's alone:
- preprocess: `preprocess_case` with the default PreprocessSpec (128 x 128 at 3 mm);
- evaluate: `evaluate_case` on the preprocessed label rolled by one model voxel, plus an
  island (no model needed): map it back onto the CT grid, keep the largest component, write
  it as .nii.gz and score it against the mask.
Printed per size and step: the volume (int16 MiB = V), the child's RSS after its imports
(base), its peak RSS (VmHWM), peak / V, (peak - base) / V and the step's wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

MB = 2**20
SPACING = (0.7, 0.7, 1.0)  # x, y, z in mm
CHUNK = 64  # slices generated at a time


def vm_kb(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def synthetic_slabs(slices: int, size: int, seed: int = 0):
    """(z0, ct int16 (n, size, size), liver uint8) chunks of a synthetic abdomen, in mm-based shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = yy * SPACING[1], xx * SPACING[0]
    cy, cx = size * SPACING[1] / 2, size * SPACING[0] / 2
    for z0 in range(0, slices, CHUNK):
        n = min(CHUNK, slices - z0)
        ct = np.full((n, size, size), -1000, np.int16)
        liver = np.zeros((n, size, size), np.uint8)
        for k in range(n):
            t = (z0 + k) / max(slices - 1, 1)  # 0 (feet) .. 1 (head)
            a, b = 0.42 * size * SPACING[0] * (1 - 0.1 * t), 0.30 * size * SPACING[1]
            body = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
            ct[k][body] = rng.integers(0, 40, int(body.sum()), dtype=np.int16)
            # The liver: an ellipsoid in the upper third, on the patient's right (image left, RAS x flipped).
            lz = (t - 0.65) / 0.2
            if abs(lz) < 1:
                r = np.sqrt(1 - lz**2)
                blob = ((xx - (cx - 0.35 * a)) / (0.45 * a * r)) ** 2 + ((yy - cy) / (0.6 * b * r)) ** 2 <= 1
                ct[k][blob] = 50 + rng.integers(0, 11, int(blob.sum()), dtype=np.int16)
                liver[k][blob] = 1
        yield z0, ct, liver


def write_case(folder: Path, slices: int, size: int) -> None:
    """ct.nii.gz (int16) and liver.nii.gz (uint8) of one synthetic case, RAS-stored."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = sitk.Image(size, size, slices, sitk.sitkInt16)
    liver = sitk.Image(size, size, slices, sitk.sitkUInt8)
    for z0, ct_part, liver_part in synthetic_slabs(slices, size):
        n = ct_part.shape[0]
        ct[:, :, z0:z0 + n] = sitk.GetImageFromArray(ct_part)  # pasted in place
        liver[:, :, z0:z0 + n] = sitk.GetImageFromArray(liver_part)
    for image in (ct, liver):
        image.SetSpacing(SPACING)
        image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # RAS in ITK's LPS frame
        image.SetOrigin((size * SPACING[0] / 2, size * SPACING[1] / 2, -0.5 * slices * SPACING[2]))
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"), useCompression=True)
    sitk.WriteImage(liver, str(folder / "liver.nii.gz"), useCompression=True)


def child(step: str, folder: Path) -> dict:
    """Run one step here (a fresh process) and return its base and peak RSS and wall time."""
    from varprune.data.preprocess import PreprocessSpec, load_npz, preprocess_case

    if step == "evaluate":
        from varprune.engine.evaluate import evaluate_case  # torch and MONAI: preprocess needs neither
    base = vm_kb("VmRSS")
    t0 = time.perf_counter()
    if step == "preprocess":
        preprocess_case(folder / "ct.nii.gz", folder / "liver.nii.gz", "large", PreprocessSpec(),
                        folder / "large.npz")
        out = {}
    else:
        grid = load_npz(folder / "large.npz")
        prob = np.roll(grid["label"].astype(np.float32), 1, axis=2)
        prob[:, 4:8, 4:8] = 1.0  # an island: keep_largest_component drops it
        out = evaluate_case(prob, grid, folder / "liver.nii.gz", "large", folder / "pred.nii.gz")
    wall = time.perf_counter() - t0
    return {"base_kb": base, "peak_kb": vm_kb("VmHWM"), "wall_s": wall, "metrics": out}


def run_child(step: str, folder: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", step, str(folder)], check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--size", type=int, default=512, help="in-plane matrix (size x size)")
    parser.add_argument("--steps", nargs="+", choices=["preprocess", "evaluate"],
                        default=["preprocess", "evaluate"], help="evaluate needs preprocess's .npz")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    if "evaluate" in args.steps and "preprocess" not in args.steps:
        parser.error("evaluate reads the .npz that preprocess writes: run both")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for slices in args.slices:
            folder = Path(tmp_name) / f"s{slices}"
            t0 = time.perf_counter()
            write_case(folder, slices, args.size)
            volume_mb = args.size * args.size * slices * 2 / MB
            print(f"{slices} slices: wrote the case ({volume_mb:.0f} MiB int16) in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            for step in args.steps:
                result = run_child(step, folder)
                base, peak = result["base_kb"] / 1024, result["peak_kb"] / 1024
                rows.append((slices, volume_mb, step, base, peak, result["wall_s"]))
                print(f"  {step}: peak {peak:.0f} MiB in {result['wall_s']:.1f} s"
                      + (f", metrics {result['metrics']}" if result["metrics"] else ""), flush=True)
            for path in folder.iterdir():
                path.unlink()
    print(f"\n{'slices':>6} {'V MiB':>6} {'step':>10} {'base MiB':>8} {'peak MiB':>8} {'peak/V':>7} "
          f"{'(peak-base)/V':>14} {'wall s':>7}")
    for slices, volume_mb, step, base, peak, wall in rows:
        print(f"{slices:6d} {volume_mb:6.0f} {step:>10} {base:8.0f} {peak:8.0f} {peak / volume_mb:7.2f} "
              f"{(peak - base) / volume_mb:14.2f} {wall:7.1f}")


if __name__ == "__main__":
    main()
