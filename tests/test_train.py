"""The shared training loop: learning, determinism, exact resume, clear failures."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import varprune.engine.train as train_module
from tests.tiny_model import disc_volume, tiny_spec
from varprune.engine.train import TrainingError, TrainSettings, train
from varprune.model.network import build_model, read_checkpoint

SETTINGS = TrainSettings(epochs=3, batch_size=4, lr=2e-3, warmup=0.1, seed=3)


def volumes():
    return [disc_volume(f"ircad0{i}", seed=i) for i in (1, 2, 3)], [disc_volume("ircad04", seed=4)]


def run(tmp_path, name, settings=SETTINGS, state=None):
    spec = tiny_spec()
    torch.manual_seed(settings.seed)
    model = build_model(spec)
    train_vols, val_vols = volumes()
    out = tmp_path / name
    result = train(model, spec, train_vols, val_vols, settings, out / "model.pt", out / "log.csv",
                   state or out / "state", {"kind": "test"}, threads=1, progress=False)
    weights = read_checkpoint(out / "model.pt")["state_dict"]
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    return result, weights, rows


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_training_lowers_the_loss_and_logs_every_epoch(tmp_path):
    result, _, rows = run(tmp_path, "a", TrainSettings(epochs=10, batch_size=4, lr=3e-3, seed=0))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert list(rows[0]) == ["epoch", "step", "loss", "val_dice", "lr", "seconds"]
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert result.best_val_dice == pytest.approx(max(float(r["val_dice"]) for r in rows), abs=1e-6)


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_two_runs_of_one_config_agree(tmp_path):
    _, first, rows1 = run(tmp_path, "a")
    _, second, rows2 = run(tmp_path, "b")
    assert same_weights(first, second)
    assert [r["loss"] for r in rows1] == [r["loss"] for r in rows2]


def killed_in_epoch_3(tmp_path, name, monkeypatch, settings=SETTINGS) -> None:
    """Run `name` and kill it during the third epoch's validation: epochs 1-2 are in the resume state."""
    calls = {"n": 0}
    real_validation = train_module.validation_dice

    def dies_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_validation(*args, **kwargs)

    monkeypatch.setattr(train_module, "validation_dice", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, name, settings)
    assert not (tmp_path / name / "model.pt").exists()
    monkeypatch.setattr(train_module, "validation_dice", real_validation)


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_resume_continues_from_last_epoch_and_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    _, uninterrupted, rows = run(tmp_path, "straight")
    killed_in_epoch_3(tmp_path, "resumed", monkeypatch)
    result, resumed, resumed_rows = run(tmp_path, "resumed")
    assert result.resumed_from == 2
    assert same_weights(resumed, uninterrupted)
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in rows]


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_changed_settings_do_not_reuse_a_resume_state(tmp_path):
    state = tmp_path / "shared_state"
    run(tmp_path, "a", state=state)
    result, _, _ = run(tmp_path, "b", TrainSettings(epochs=3, batch_size=4, lr=1e-3, seed=3), state=state)
    assert result.resumed_from == 0


def test_steps_budget_overrides_epochs(tmp_path):
    # 3 volumes x 6 slices = 18 slices, batch 4 -> 4 steps per epoch; 6 steps = 2 epochs.
    _, _, rows = run(tmp_path, "a", TrainSettings(epochs=50, steps=6, batch_size=4, seed=0))
    assert [int(r["step"]) for r in rows] == [4, 6]


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path):
    spec = tiny_spec()
    train_vols, val_vols = volumes()
    train_vols[1].image[2, 5, 5] = np.nan
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, step \d+ .*ircad02"):
        train(build_model(spec), spec, train_vols, val_vols, SETTINGS, tmp_path / "m.pt",
              tmp_path / "log.csv", tmp_path / "state", {}, threads=1, progress=False)
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_an_exponential_moving_average_is_validated_saved_and_resumed(tmp_path, monkeypatch):
    # decay 0: the average is the raw weights, so the run equals one without it.
    _, raw, raw_rows = run(tmp_path, "raw")
    _, zero, zero_rows = run(tmp_path, "zero", TrainSettings(**{**SETTINGS.__dict__, "ema": 0.0}))
    assert same_weights(raw, zero) and [r["val_dice"] for r in raw_rows] == [r["val_dice"] for r in zero_rows]

    ema = TrainSettings(**{**SETTINGS.__dict__, "ema": 0.9})
    _, averaged, _ = run(tmp_path, "ema", ema)
    assert not same_weights(raw, averaged)

    # Killed in epoch 3, then resumed: the average continues from the saved state.
    killed_in_epoch_3(tmp_path, "ema_resumed", monkeypatch, ema)
    result, resumed, _ = run(tmp_path, "ema_resumed", ema)
    assert result.resumed_from == 2 and same_weights(resumed, averaged)


def test_a_finished_jobs_state_goes_and_so_do_the_folders_it_empties(tmp_path):
    from varprune.engine.train import discard_state

    state = tmp_path / "results" / "run" / ".state"
    for name in ("variable/cycle1", "variable/cycle2", "dense"):
        (state / name).mkdir(parents=True)
        (state / name / "last.pt").write_bytes(b"x")
    discard_state(state / "variable" / "cycle1", keep=True)
    assert (state / "variable" / "cycle1" / "last.pt").exists()
    discard_state(state / "variable" / "cycle1")
    assert not (state / "variable" / "cycle1").exists() and (state / "variable" / "cycle2").exists()
    discard_state(state / "variable" / "cycle2")
    assert not (state / "variable").exists() and (state / "dense").exists()
    discard_state(state / "dense")
    assert not state.exists() and (tmp_path / "results" / "run").is_dir()
    elsewhere = tmp_path / "mine" / "state"  # outside a .state folder: only the folder itself
    elsewhere.mkdir(parents=True)
    discard_state(elsewhere)
    assert not elsewhere.exists() and (tmp_path / "mine").is_dir()
