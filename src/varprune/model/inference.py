"""Liver probabilities for a whole preprocessed volume: slice batches (2D) or sliding windows (3D)."""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn
from tqdm import tqdm

from varprune.core.precision import autocast
from varprune.model.network import ModelSpec


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` takes CUDA when present, else the CPU; `cuda` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU")
    return torch.device(requested)


@torch.no_grad()
def predict_volume(model: nn.Module, image: np.ndarray, spec: ModelSpec, device: torch.device,
                   batch_size: int = 16, progress: bool = False, precision: str = "fp32") -> np.ndarray:
    """Foreground probability (S, H, W) of a volume (S, H, W) on the model grid; `precision`: a
    resolved one (`varprune.core.precision.resolve`), fp32 unless asked."""
    model.eval()
    volume = torch.as_tensor(image, dtype=torch.float32)
    if spec.spatial_dims == 2:
        chunks = []
        starts = range(0, volume.shape[0], batch_size)
        for start in tqdm(starts, desc="slices", unit="batch", disable=not progress, leave=False):
            batch = volume[start:start + batch_size, None].to(device)
            with autocast(device, precision):
                logits = model(batch)
            chunks.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        return torch.cat(chunks).numpy()
    inputs = volume[None, None].to(device)
    with autocast(device, precision):
        logits = sliding_window_inference(
            inputs, roi_size=spec.img_size, sw_batch_size=batch_size, predictor=model, overlap=0.5,
            mode="gaussian", progress=progress,
        )
    return torch.softmax(logits.float(), dim=1)[0, 1].cpu().numpy()
