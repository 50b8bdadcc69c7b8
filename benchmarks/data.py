"""Data-layer benchmark: convert and preprocess throughput, and how hard the synthetic data is.

Run: python benchmarks/data.py [--archive data/raw/3Dircadb1.zip]
Without an archive it synthesizes the default cohort (config/config.yaml) in a temp folder.
Prints slices per second for convert and preprocess, then the intensity baseline (best HU
window on the training cases + largest connected component) on the test cases: it must stay
at or below Dice 0.75 for the data to need a model that learns shape and context.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from varprune.data.archive import case_id, list_patients, open_zip
from varprune.data.convert import convert_case
from varprune.data.preprocess import PreprocessSpec, preprocess_case
from varprune.data.splits import make_splits
from varprune.data.synthetic import SyntheticSpec, write_synthetic_archive
from varprune.engine.baseline import Case, evaluate_baseline

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=None)
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        archive = args.archive
        if archive is None:
            archive = tmp / "3Dircadb1.zip"
            t0 = time.perf_counter()
            write_synthetic_archive(archive, SyntheticSpec(**config["synthetic"]))
            print(f"synthesized the default cohort in {time.perf_counter() - t0:.1f} s")
        with open_zip(archive, "archive") as zf:
            cases = [case_id(p) for p in list_patients(zf)]
        spec = PreprocessSpec.from_config(config["preprocess"])
        rows = []
        for case in cases:
            t0 = time.perf_counter()
            meta = convert_case(archive, case, tmp / "nifti" / case)
            t1 = time.perf_counter()
            preprocess_case(
                tmp / "nifti" / case / "ct.nii.gz",
                tmp / "nifti" / case / "liver.nii.gz",
                case,
                spec,
                tmp / "pre" / f"{case}.npz",
            )
            rows.append(
                (
                    case,
                    meta["slices"],
                    "x".join(map(str, meta["size"][:2])),
                    t1 - t0,
                    time.perf_counter() - t1,
                )
            )
        print(f"\n{'case':8} {'slices':>6} {'matrix':>8} {'convert s':>10} {'preprocess s':>13}")
        for case, n, matrix, tc, tp in rows:
            print(f"{case:8} {n:6d} {matrix:>8} {tc:10.2f} {tp:13.2f}")
        slices = sum(r[1] for r in rows)
        conv, prep = sum(r[3] for r in rows), sum(r[4] for r in rows)
        print(f"{'total':8} {slices:6d} {'':>8} {conv:10.2f} {prep:13.2f}")
        print(
            f"throughput: convert {slices / conv:.0f} slices/s, preprocess {slices / prep:.0f} slices/s "
            "(one process)"
        )

        def load(case: str) -> Case:
            folder = tmp / "nifti" / case
            return Case(
                case,
                sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "ct.nii.gz"))),
                sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "liver.nii.gz"))).astype(bool),
            )

        splits = make_splits(cases, config["split"])
        result = evaluate_baseline([load(c) for c in splits["train"]], [load(c) for c in splits["test"]])
        print(
            f"\nintensity baseline: window {result['window']} HU chosen on {len(splits['train'])} "
            "training cases, + largest connected component"
        )
        print(f"{'test case':10} {'Dice':>6} {'oracle window Dice':>19}")
        for case, score in result["dice"].items():
            print(f"{case:10} {score:6.3f} {result['oracle_dice'][case]:19.3f}")
        mean = result["mean_dice"]
        print(f"{'mean':10} {mean:6.3f} {result['mean_oracle_dice']:19.3f}")
        every = evaluate_baseline([load(c) for c in splits["train"]], [load(c) for c in cases])
        print(
            f"mean over all {len(cases)} cases: {every['mean_dice']:.3f} "
            f"(min {np.min(list(every['dice'].values())):.3f})"
        )
        verdict = "PASS" if mean <= 0.75 else "FAIL"
        print(f"hardness goal (test mean Dice <= 0.75): {verdict}")


if __name__ == "__main__":
    main()
