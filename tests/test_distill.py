"""Knowledge distillation while fine-tuning (finetune.distill): the loss term, its settings, and
the training loop with a teacher."""

from __future__ import annotations

import csv
import dataclasses
import shutil

import pytest
import torch
import yaml

from tests.tiny_model import disc_volume, tiny_spec
from varprune.engine.distill import DistillSpec, distillation_loss, load_teacher
from varprune.engine.train import TrainingError, TrainSettings, train
from varprune.model.network import build_model, read_checkpoint, save_checkpoint

from .workflow_helpers import REPO, TINY_CONFIG, scheduled, snakemake

SETTINGS = TrainSettings(epochs=2, batch_size=4, lr=2e-3, warmup=0.1, seed=3)


def test_the_term_is_zero_for_equal_outputs_and_grows_with_their_difference():
    torch.manual_seed(0)
    teacher = torch.randn(2, 2, 8, 8)
    assert distillation_loss(teacher.clone(), teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    near = distillation_loss(teacher + 0.1 * torch.randn_like(teacher), teacher, 2.0)
    far = distillation_loss(-teacher, teacher, 2.0)
    assert 0 < near.item() < far.item()
    student = (-teacher).requires_grad_()
    distillation_loss(student, teacher, 2.0).backward()
    assert student.grad.abs().sum() > 0


def test_the_term_is_hintons_kl_times_t_squared():
    torch.manual_seed(1)
    s, t = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    temperature = 3.0
    p_t = torch.softmax(t / temperature, 1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / temperature, 1))).sum(1).mean()
    assert distillation_loss(s, t, temperature).item() == pytest.approx(temperature**2 * kl.item(), rel=1e-5)


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"temperature": 0.0}, {"teacher": "student"}])
def test_bad_settings_name_the_key(bad):
    with pytest.raises(ValueError, match="finetune.distill"):
        DistillSpec(**bad)


def _fine_tune(tmp_path, name, settings, teacher=None):
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec)
    train_vols = [disc_volume(f"ircad0{i}", seed=i) for i in (1, 2, 3)]
    out = tmp_path / name
    train(model, spec, train_vols, [disc_volume("ircad04", seed=4)], settings, out / "model.pt",
          out / "log.csv", out / "state", {"kind": "test"}, threads=1, progress=False, teacher=teacher)
    with open(out / "log.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)], read_checkpoint(out / "model.pt")["state_dict"]


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_a_teacher_changes_training_only_when_the_weight_is_set(tmp_path):
    torch.manual_seed(7)
    teacher = build_model(tiny_spec())  # a different network: its outputs pull the student away
    plain, plain_weights = _fine_tune(tmp_path, "plain", SETTINGS)
    ignored, ignored_weights = _fine_tune(tmp_path, "ignored", SETTINGS, teacher=teacher)
    assert plain == ignored and all(torch.equal(plain_weights[k], ignored_weights[k]) for k in plain_weights)
    on = dataclasses.replace(SETTINGS, distill=DistillSpec(weight=1.0, temperature=2.0))
    distilled, _ = _fine_tune(tmp_path, "distilled", on, teacher=teacher)
    assert distilled != plain  # the logged loss includes the KL term


def test_distillation_without_a_teacher_is_refused(tmp_path):
    on = dataclasses.replace(SETTINGS, distill=DistillSpec(weight=1.0))
    with pytest.raises(TrainingError, match="teacher"):
        _fine_tune(tmp_path, "none", on)


def test_the_teacher_is_the_dense_checkpoint_or_the_parent(tmp_path):
    spec = tiny_spec()
    for name, seed in (("dense", 0), ("parent", 1)):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / f"{name}.pt", build_model(spec), spec, {"kind": name})
    assert load_teacher(DistillSpec(), tmp_path / "parent.pt", tmp_path / "dense.pt") is None

    def first_weight(model):
        return next(iter(model.state_dict().values()))

    dense = read_checkpoint(tmp_path / "dense.pt")["state_dict"]
    parent = read_checkpoint(tmp_path / "parent.pt")["state_dict"]
    got = load_teacher(DistillSpec(weight=1.0), tmp_path / "parent.pt", tmp_path / "dense.pt")
    assert torch.equal(first_weight(got), next(iter(dense.values())))
    got = load_teacher(DistillSpec(weight=1.0, teacher="parent"), tmp_path / "parent.pt",
                       tmp_path / "dense.pt")
    assert torch.equal(first_weight(got), next(iter(parent.values())))
    # Cycle 1 and the controls start from the dense model: no second path is needed.
    got = load_teacher(DistillSpec(weight=1.0), tmp_path / "dense.pt")
    assert torch.equal(first_weight(got), next(iter(dense.values())))


@pytest.mark.workflow
def test_the_distillation_preset_reruns_only_the_fine_tunings_and_records_the_teacher(done_run, tmp_path):
    """config/distill.yaml's settings on the tiny run: the cycles declare the dense model as an
    input, a cycle is fine-tuned with the term (its checkpoint says so), and training is not redone."""
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True)
    cfg = yaml.safe_load(TINY_CONFIG.read_text(encoding="utf-8"))
    preset = yaml.safe_load((REPO / "config" / "distill.yaml").read_text(encoding="utf-8"))
    cfg["finetune"]["distill"] = preset["finetune"]["distill"]
    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = scheduled(workdir, config=config)
    assert plan["train"] == 0 and plan["prune_cycle"] > 0 and plan["dense_long"] == 1
    target = "results/tiny/variable/cycle1/model.pt"
    out = snakemake(workdir, target, "-n", config=config).stdout
    assert "results/tiny/dense/model.pt" in out.split("rule prune_cycle:")[1].split("output:")[0]
    snakemake(workdir, target, config=config)
    settings = read_checkpoint(workdir / target)["provenance"]["training"]["settings"]
    assert settings["distill"] == {"weight": 1.0, "temperature": 2.0, "teacher": "dense"}
