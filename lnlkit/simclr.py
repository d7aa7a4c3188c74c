"""SimCLR (Chen et al., 2020): image features learnt without labels, DTM's pre-trained encoder f_p.

Two random views of each image pass through an encoder and a small projection head; the
NT-Xent loss makes the two views of one image each other's nearest neighbour among the 2B
views of a batch (cosine similarity over a temperature):

    loss_i = -log exp(s(z_i, z_j) / tau) / sum_{k != i} exp(s(z_i, z_k) / tau),   (i, j) two views.

The views are made on the device for a whole uint8 batch at once: a random resized crop
(an affine resampling), a horizontal flip (colour images), brightness and contrast jitter,
and for colour images a random grey-scale. The features used downstream are the encoder's
penultimate features of the un-augmented images (not the projection), as in SimCLR.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import LabelledData
from .models import build_model


def random_views(x: torch.Tensor, generator: torch.Generator, min_scale: float = 0.3,
                 flip: bool = True) -> torch.Tensor:
    """One augmented view of each image of a float batch (N, C, H, W) in [0, 1]."""
    n, c, _, _ = x.shape
    dev = x.device

    def uniform(low, high, size=(n,)):
        return low + (high - low) * torch.rand(size, device=dev, generator=generator)

    # Random resized crop: area fraction s, aspect ratio r, centre anywhere the crop fits.
    scale, log_ratio = uniform(min_scale, 1.0), uniform(np.log(3 / 4), np.log(4 / 3))
    width = (scale * log_ratio.exp()).sqrt().clamp(max=1.0)
    height = (scale / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx, cy = uniform(-1, 1) * (1 - width), uniform(-1, 1) * (1 - height)
    sign = torch.where(flip & (torch.rand(n, device=dev, generator=generator) < 0.5), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # Colour: brightness and contrast jitter (0.4), and grey-scale with probability 0.2 (colour images).
    v = v * uniform(0.6, 1.4).view(n, 1, 1, 1)
    mean = v.mean((1, 2, 3), keepdim=True)
    v = (v - mean) * uniform(0.6, 1.4).view(n, 1, 1, 1) + mean
    if c == 3:
        grey = (v * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
        v = torch.where((torch.rand(n, device=dev, generator=generator) < 0.2).view(n, 1, 1, 1), grey.expand_as(v), v)
    return v.clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's loss over the 2B views of a batch: each view's positive is the other view of its image."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own candidate
    b = len(z1)
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(similarity, positives)


class SimCLRModel(nn.Module):
    """An encoder (any :class:`lnlkit.models.Classifier`; its head is unused) and a projection head."""

    def __init__(self, encoder: nn.Module, projection_dim: int = 64):
        super().__init__()
        self.encoder = encoder
        d = encoder.feature_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, projection_dim))

    def forward(self, x):
        return self.projection(self.encoder.features(x))


def train_simclr(data: LabelledData, model: str = "small_cnn", epochs: int = 30, batch_size: int = 256,
                 lr: float = 1e-3, temperature: float = 0.5, seed: int = 0, device: str | torch.device = "cpu",
                 progress: bool = False) -> dict:
    """Train a SimCLR encoder on ``data``'s images (no labels are read); return its artefact:
    the encoder's weights, the input statistics, and the features of every image (N, d)."""
    from tqdm import tqdm

    if not data.is_image:
        raise ValueError("SimCLR needs images; for feature inputs use DTM's features='pixels'")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        images = torch.from_numpy(np.ascontiguousarray(data.inputs.transpose(0, 3, 1, 2))).to(device)
        unit = images.float() / 255.0
        mean, std = unit.mean((0, 2, 3)).view(1, -1, 1, 1), unit.std((0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1)
        encoder = build_model(model, data.num_classes, data.inputs.shape[1:]).to(device)
        if hasattr(encoder, "init_from_data"):  # patch whitening: images only
            encoder.init_from_data(((unit[:5000] - mean) / std))
        simclr = SimCLRModel(encoder).to(device)
        optimizer = torch.optim.Adam(simclr.parameters(), lr=lr, weight_decay=1e-6)
        flip = data.name != "digits"  # a mirrored digit is another symbol
        min_scale = 0.5 if images.shape[-1] <= 8 else 0.3
        losses = []
        for _ in tqdm(range(epochs), desc="SimCLR", disable=not progress):
            simclr.train()
            order = torch.randperm(len(images), device=device, generator=gen)
            total, steps = 0.0, 0
            for start in range(0, len(order) - 1, batch_size):
                x = unit[order[start:start + batch_size]]
                if len(x) < 2:
                    continue
                v1 = (random_views(x, gen, min_scale, flip) - mean) / std
                v2 = (random_views(x, gen, min_scale, flip) - mean) / std
                loss = nt_xent(simclr(v1), simclr(v2), temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            losses.append(total / max(steps, 1))
        encoder.eval()
        with torch.no_grad():
            features = torch.cat([encoder.features((unit[i:i + 1024] - mean) / std).float()
                                  for i in range(0, len(unit), 1024)])
    return {"encoder": encoder.state_dict(), "model": model, "features": F.normalize(features, dim=1).cpu(),
            "loss_per_epoch": losses}


def pixel_features(data: LabelledData, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Features without any pre-training: the leading principal components of the pixels, unit length
    (DTM's "without pre-training" ablation)."""
    from sklearn.decomposition import PCA

    flat = data.flat_pixels_chw().astype(np.float32) / 255.0
    components = PCA(n_components=min(dim, *flat.shape), random_state=seed).fit_transform(flat)
    return components / np.linalg.norm(components, axis=1, keepdims=True).clip(1e-12)
