"""Precision: what each setting means on a device, and the bf16 path on the CPU (training step,
evaluation, a whole pruning cycle), which runs here whatever the machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from tests.tiny_model import disc_volume, tiny_spec
from varprune.core.precision import PrecisionError, from_legacy, resolve
from varprune.engine.train import TrainSettings, train
from varprune.model.inference import predict_volume
from varprune.model.network import build_model, load_model, read_checkpoint, save_checkpoint
from varprune.pruning.cycle import run_cycle

from .workflow_helpers import REPO

CPU = torch.device("cpu")


def test_auto_is_fp32_on_the_cpu_and_fp16_is_refused_there():
    assert resolve("auto", CPU) == "fp32"
    assert resolve("bf16", CPU) == "bf16"
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA GPU"):
        resolve("fp16", CPU)
    with pytest.raises(PrecisionError, match="one of auto, fp32, bf16, fp16"):
        resolve("half", CPU)


def test_the_former_amp_flag_still_means_what_it_meant():
    assert from_legacy({"amp": False}) == "fp32"
    assert from_legacy({"amp": True}) == "auto"
    assert from_legacy({"amp": None, "precision": "auto"}) == "auto"
    assert from_legacy({"amp": False, "precision": "bf16"}) == "bf16"  # the explicit key wins
    assert TrainSettings.from_config({"amp": False}).precision == "fp32"
    assert TrainSettings.from_config({}).precision == "auto"


def _linear_output_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def test_bf16_inference_runs_in_bf16_and_agrees_with_fp32():
    spec = tiny_spec("setr")
    torch.manual_seed(0)
    model = build_model(spec)
    volume = disc_volume("ircad01", seed=1)
    reference = predict_volume(model, volume.image, spec, CPU, 4)
    dtypes = _linear_output_dtypes(model)
    low = predict_volume(model, volume.image, spec, CPU, 4, precision="bf16")
    assert dtypes == {torch.bfloat16}  # the matrix products ran in bf16
    assert low.dtype == np.float32
    assert np.abs(low - reference).max() < 0.05
    assert not np.array_equal(low, reference)


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_a_bf16_training_step_learns_and_saves_fp32_weights(tmp_path):
    spec = tiny_spec("setr")
    torch.manual_seed(0)
    model = build_model(spec)
    dtypes = _linear_output_dtypes(model)
    train_vols = [disc_volume(f"ircad0{i}", seed=i) for i in (1, 2, 3)]
    settings = TrainSettings(epochs=4, batch_size=4, lr=3e-3, seed=0, device="cpu", precision="bf16")
    result = train(model, spec, train_vols, [disc_volume("ircad04", seed=4)], settings,
                   tmp_path / "model.pt", tmp_path / "log.csv", tmp_path / "state", {"kind": "test"},
                   threads=1, progress=False)
    assert torch.bfloat16 in dtypes
    losses = [row["loss"] for row in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert np.isfinite(result.best_val_dice)
    saved = read_checkpoint(tmp_path / "model.pt")
    assert {t.dtype for t in saved["state_dict"].values() if t.is_floating_point()} == {torch.float32}
    assert saved["provenance"]["training"]["settings"]["precision"] == "bf16"


def _write_case(path, volume) -> None:
    np.savez(path, image=volume.image, label=volume.label, spacing=volume.grid["spacing"],
             case=np.asarray(volume.case))


def test_a_pruning_cycle_fine_tunes_in_bf16(tmp_path):
    spec = tiny_spec("setr")
    torch.manual_seed(0)
    model = build_model(spec)
    save_checkpoint(tmp_path / "dense.pt", model, spec, {"kind": "dense"})
    files = {}
    for split, cases in (("train", (1, 2, 3)), ("val", (4,))):
        files[split] = []
        for i in cases:
            path = tmp_path / f"ircad0{i}.npz"
            _write_case(path, disc_volume(f"ircad0{i}", seed=i))
            files[split].append(str(path))
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["ircad01"], "val": ["ircad04"]}))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    pruning = {**config["pruning"], "target": 0.3, "previous_target": 0.0, "calibration_batches": 2,
               "calibration_batch_size": 4}
    finetune = {**config["finetune"], "batch_size": 4, "device": "cpu", "precision": "bf16"}
    summary = run_cycle(tmp_path / "dense.pt", tmp_path / "splits.json", files, "variable", 1, pruning,
                        finetune, tmp_path / "c1.pt", tmp_path / "seq.csv", tmp_path / "ft.csv",
                        tmp_path / "state", out_oneshot=tmp_path / "oneshot.json", threads=1)
    assert summary["reduction_vs_dense"] == pytest.approx(0.3, abs=0.05)
    oneshot = json.loads((tmp_path / "oneshot.json").read_text())
    assert np.isfinite(oneshot["val_dice_before"]) and np.isfinite(oneshot["val_dice_after"])
    pruned, pruned_spec, provenance = load_model(tmp_path / "c1.pt")
    assert provenance["training"]["settings"]["precision"] == "bf16"
    assert sum(layer.ffn for layer in pruned_spec.layers) < sum(layer.ffn for layer in spec.layers)
