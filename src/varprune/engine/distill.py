"""Knowledge distillation for fine-tuning: the pruned model also learns the voxel probabilities
of a teacher (the dense model, or the model before this cycle's surgery).

At high pruning ratios the labels alone repair a pruned ViT slowly; matching the softened
outputs of the unpruned model passes on what the removed channels knew (the usual recovery in
ViT pruning papers). The term is Hinton's: KL(teacher || student) on softmax(logits / T) over
the classes of every voxel, averaged over voxels and scaled by T² so that its gradients keep
their size whatever the temperature; it is added to the segmentation loss with `weight`.
Off (weight 0) by default: nothing changes, not even the jobs' parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TEACHERS = ("dense", "parent")


@dataclass(frozen=True)
class DistillSpec:
    """The `finetune.distill` config slice."""

    weight: float = 0.0
    temperature: float = 2.0
    teacher: str = "dense"  # dense: the unpruned model; parent: the model before this fine-tuning

    def __post_init__(self) -> None:
        if self.weight < 0 or self.temperature <= 0:
            raise ValueError(f"finetune.distill needs weight >= 0 and temperature > 0, got weight "
                             f"{self.weight}, temperature {self.temperature}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"finetune.distill.teacher must be one of {', '.join(TEACHERS)}, "
                             f"got {self.teacher!r}")

    @property
    def on(self) -> bool:
        return self.weight > 0

    @classmethod
    def from_config(cls, cfg: dict | None) -> DistillSpec:
        return cls(**(cfg or {}))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean over voxels of KL(softmax(teacher / T) || softmax(student / T)); logits are
    (batch, classes, *spatial)."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(dim=1)
    return kl.mean() * temperature**2


def load_teacher(spec: DistillSpec, parent: str | os.PathLike,
                 dense: str | os.PathLike | None = None) -> torch.nn.Module | None:
    """The teacher of a fine-tuning that starts from checkpoint `parent`: None when distillation
    is off; the dense checkpoint `dense` for teacher dense (the parent itself when it is the
    dense model and no other is given); the parent as it was before the surgery for teacher parent."""
    from varprune.model.network import load_model

    if not spec.on:
        return None
    path = dense if spec.teacher == "dense" and dense else parent
    return load_model(path)[0]
