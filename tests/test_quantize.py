"""INT8 on top of pruning: `varprune export --quantize int8` calibrates on training slices,
guards on validation Dice, writes the INT8 model next to the fp32 export only when accepted,
and `predict` runs it; the report's INT8 rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.tiny_model import disc_volume, tiny_spec
from varprune.app.cli import main
from varprune.engine.quantize import QuantizeSettings, calibration_slices, int8_path
from varprune.engine.train import TrainSettings, train
from varprune.model.network import build_model, save_checkpoint

PREPROCESS = {"window": [-100, 400], "spacing_mm": 12.0, "input_size": 32}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SETR trained on discs, with provenance naming its split, and its cases as .npz."""
    root = tmp_path_factory.mktemp("int8")
    spec = tiny_spec("setr")
    torch.manual_seed(0)
    model = build_model(spec)
    cases = {"train": [1, 2, 3, 5], "val": [4]}
    volumes = {part: [disc_volume(f"ircad0{i}", seed=i) for i in ids] for part, ids in cases.items()}
    settings = TrainSettings(epochs=12, batch_size=4, lr=3e-3, seed=0, device="cpu")
    result = train(model, spec, volumes["train"], volumes["val"], settings, root / "tmp.pt",
                   root / "log.csv", root / "state", {}, threads=1, progress=False)
    assert result.best_val_dice > 0.5  # a model whose Dice INT8 can lose
    provenance = {"kind": "dense", "config": {"preprocess": PREPROCESS},
                  "split": {part: [v.case for v in vols] for part, vols in volumes.items()}}
    save_checkpoint(root / "model.pt", model, spec, provenance)
    for scale, folder in ((1.0, "data"), (1000.0, "wrong")):  # `wrong`: training slices x1000
        (root / folder).mkdir()
        for part, vols in volumes.items():
            for v in vols:
                image = v.image * (scale if part == "train" else 1.0)
                np.savez(root / folder / f"{v.case}.npz", image=image.astype(np.float32), label=v.label,
                         spacing=v.grid["spacing"], case=np.asarray(v.case))
    return root


def _export(root, tmp_path, *extra):
    out = tmp_path / "model.onnx"
    code = main(["export", "--model", str(root / "model.pt"), "--format", "onnx", "--output", str(out),
                 "--quantize", "int8", "--threads", "1", *extra])
    return code, out, int8_path(out)


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_int8_is_written_next_to_the_export_and_predicts_like_it(trained, tmp_path, capsys):
    code, fp32, int8 = _export(trained, tmp_path, "--data", str(trained / "data"), "--max-dice-drop", "0.05",
                               "--quantize-mode", "static", "--quantize-ops", "MatMul", "Gemm", "Conv")
    out = capsys.readouterr().out
    assert code == 0, out
    assert int8 == tmp_path / "model.int8.onnx" and int8.is_file()
    assert int8.stat().st_size < fp32.stat().st_size
    assert "INT8 (static)" in out and "on ircad04" in out  # guarded on the validation case
    from varprune.engine.train import validation_dice
    from varprune.model.deployed import load_any

    loaded = load_any(int8)
    record = loaded.meta["quantization"]
    assert record["accepted"] and record["calibration_cases"] == ["ircad01", "ircad02", "ircad03", "ircad05"]
    assert loaded.provenance["config"]["preprocess"] == PREPROCESS  # predict can use it on a CT
    volumes = [disc_volume("ircad04", seed=4)]
    dice = validation_dice(loaded.model, loaded.spec, volumes, torch.device("cpu"), 16)
    assert dice == pytest.approx(record["val_dice_int8"], abs=1e-6)


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_int8_is_refused_with_nothing_written_when_the_guard_fails(trained, tmp_path, capsys):
    """Calibrated on slices a thousand times too bright, INT8 loses the liver; with a margin of 0
    it is refused, says by how much, and leaves no file (the fp32 export stays)."""
    code, fp32, int8 = _export(trained, tmp_path, "--data", str(trained / "wrong"), "--max-dice-drop", "0",
                               "--quantize-mode", "static")
    err = capsys.readouterr().err
    assert code == 1
    assert "validation Dice" in err and "more than export.max_dice_drop allows (0.00 points)" in err
    assert "not written" in err
    assert fp32.is_file() and not int8.exists()
    assert not list(tmp_path.glob(".*int8*")) and not list(tmp_path.glob("*.tmp"))


def test_int8_options_are_checked_before_anything_is_written(trained, tmp_path, capsys):
    code, fp32, _ = _export(trained, tmp_path)  # no --data
    assert code == 1 and "--quantize int8 needs --data" in capsys.readouterr().err and not fp32.exists()
    code = main(["export", "--model", str(trained / "model.pt"), "--format", "torchscript", "--output",
                 str(tmp_path / "m.ts"), "--quantize", "int8", "--data", str(trained / "data")])
    assert code == 1 and "INT8 models are ONNX" in capsys.readouterr().err
    with pytest.raises(ValueError, match="quantize_mode"):
        QuantizeSettings(mode="fp8")


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_dynamic_int8_needs_no_calibration(trained, tmp_path, capsys):
    """The default (dynamic MatMul/Gemm, the fastest measured): no calibration slices."""
    from varprune.model.deployed import load_any

    code, _, int8 = _export(trained, tmp_path, "--data", str(trained / "data"), "--max-dice-drop", "0.05")
    assert code == 0 and "INT8 (dynamic)" in capsys.readouterr().out
    record = load_any(int8).meta["quantization"]
    assert record["calibration_slices"] == 0 and record["ops"] == ["MatMul", "Gemm"]


def test_calibration_takes_training_slices_half_through_the_liver():
    volumes = [disc_volume(f"ircad0{i}", seed=i, slices=10) for i in (1, 2)]
    slices = calibration_slices(volumes, 8, seed=0)
    assert slices.shape == (8, 1, 32, 32) and slices.dtype == np.float32
    assert np.array_equal(slices, calibration_slices(volumes, 8, seed=0))  # seeded
    # 18 of the 20 slices hold a disc, 2 do not: both of those, and 6 through the liver
    with_liver = sum(any((s[0] == v.image[k]).all() and v.label[k].any() for v in volumes for k in range(10))
                     for s in slices)
    assert with_liver == 6
    assert len(calibration_slices(volumes, 64, seed=0)) == 20  # all of them when there are fewer


def test_the_report_rows_say_accepted_or_refused(tmp_path):
    from varprune.core.layout import INT8_KEY, Model, RunFiles, file_key, int8_path
    from varprune.report.tables import human_int8
    from varprune.study.compare import int8_table

    metrics = pd.DataFrame({"case": ["a", "b"], "dice": [0.9, 0.8], "voe": 0.1, "rvd": 0.0, "assd_mm": 1.0,
                            "msd_mm": 5.0, "hd95_mm": 3.0})
    folder = tmp_path / "int8"
    files = {INT8_KEY: str(folder)}
    for model, accepted in ((Model("dense"), True), (Model("variable", 2), False)):
        record = {"accepted": accepted, "mode": "static", "val_dice_fp32": 0.9,
                  "val_dice_int8": 0.899 if accepted else 0.5, "bytes_fp32": 4e6, "bytes_int8": 1e6}
        int8_path(folder, model, "record").parent.mkdir(parents=True)
        int8_path(folder, model, "record").write_text(json.dumps(record))
        metrics.to_csv(tmp_path / f"{model.method}.csv", index=False)
        files[file_key(0, model, "metrics")] = str(tmp_path / f"{model.method}.csv")
    metrics.assign(dice=[0.91, 0.8]).to_csv(int8_path(folder, Model("dense"), "metrics"), index=False)
    int8_path(folder, Model("dense"), "cost").write_text(json.dumps({
        "latency_ms_median": 5.0, "latency_ms_spread": 0.2, "latency_fp32_onnx_ms_median": 10.0,
        "latency_fp32_onnx_ms_spread": 0.3}))
    sizes = {"params": 10, "macs_thop": 5, "macs_full": 6, "macs_transformer": 4}
    sizes.update({f"{key}_reduction": 0.0 for key in list(sizes)})
    table = pd.DataFrame([{"method": m, "cycle": c, "target": t, "dice_mean": 0.85, **sizes}
                          for m, c, t in (("dense", 0, 0.0), ("dense_long", 0, 0.0), ("variable", 2, 0.5))])
    rows = int8_table(RunFiles(files), table)
    assert list(zip(rows.method, rows.quantization, strict=True)) == [("dense", "accepted"),
                                                                      ("variable", "refused")]
    dense = rows.iloc[0]
    assert dense.int8_speedup_vs_fp32_onnx == pytest.approx(2.0)
    assert dense.int8_dice_vs_fp32 == pytest.approx(0.005)
    assert dense.dice_vs_dense_long == pytest.approx(0.005)
    assert np.isnan(rows.iloc[1].dice_mean)  # a refused model has no test metrics
    shown = human_int8(rows)
    assert list(shown["INT8"]) == ["accepted", "refused"] and list(shown["speed-up"]) == ["2.00×", ""]
    assert int8_table(RunFiles({k: v for k, v in files.items() if k != INT8_KEY}), table).empty


def test_the_library_defaults_are_the_config_defaults():
    import yaml

    from .workflow_helpers import REPO

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert QuantizeSettings.from_config(config["export"]) == QuantizeSettings()
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    schema = schema["properties"]["export"]["properties"]
    assert QuantizeSettings().mode == schema["quantize_mode"]["default"]
    assert list(QuantizeSettings().ops) == schema["quantize_ops"]["default"]
