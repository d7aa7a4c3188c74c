"""A conditional DDPM over transition-matrix parameters W (DTM, Sec. 3.2; Algorithms 1 and 2).

Forward process (Eq. 3), in closed form for any step m:

    W_m = sqrt(alpha_bar_m) W_0 + sqrt(1 - alpha_bar_m) eps,   eps ~ N(0, I),
    alpha_m = 1 - beta_m,   alpha_bar_m = prod_{i <= m} alpha_i.

Training (Algorithm 1) minimises the epsilon-prediction loss
``|| eps - eps_theta(W_m, f_p(x), m) ||^2`` over images x (with their starting matrix W_0 = W(x))
and steps m. Sampling (Algorithm 2) runs the reverse process from W_M:

    W_{m-1} = 1/sqrt(alpha_m) (W_m - beta_m / sqrt(1 - alpha_bar_m) eps_theta(W_m, f_p(x), m)) + sigma_m z,

with sigma_m^2 = beta_tilde_m = (1 - alpha_bar_{m-1}) / (1 - alpha_bar_m) beta_m (Eq. 4) and z = 0 at
the last step. The schedules and the update are diffusers' ``DDPMScheduler`` (and
``DDIMScheduler`` for the few-step sampler of the LRA-style schedule).

What the paper leaves broken: with M = 10 steps and beta from 1e-4 to 0.02, alpha_bar_M = 0.904,
so W_M is still 95 % signal, yet Algorithm 2 starts from W_M ~ N(0, I). :func:`sample_matrices`
offers the literal start (``start="noise"``), the start the forward process actually reaches
(``start="forward"``: the image's starting matrix noised to step M) and, with
``schedule="lra"``, a 1,000-step schedule that does reach noise, sampled in 10 DDIM steps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SCHEDULES = ("paper", "lra")
STARTS = ("noise", "forward")


def make_schedulers(schedule: str = "paper", steps: int = 10, beta_start: float = 1e-4, beta_end: float = 0.02):
    """(training scheduler, sampling scheduler) for a schedule.

    ``"paper"``: M = ``steps`` training steps, beta linear from ``beta_start`` to ``beta_end``, the
    same steps for sampling (DDPM). ``"lra"``: 1,000 training steps (the schedule of DDPM and of
    LRA-diffusion), sampled with ``steps`` DDIM steps (eta = 0). ``clip_sample`` is off: W is not
    an image in [-1, 1], and diffusers' default would clip the predicted W_0 there.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    common = dict(beta_start=beta_start, beta_end=beta_end, beta_schedule="linear", clip_sample=False)
    if schedule == "paper":
        train = DDPMScheduler(num_train_timesteps=steps, variance_type="fixed_small", **common)
        sample = DDPMScheduler(num_train_timesteps=steps, variance_type="fixed_small", **common)
        sample.set_timesteps(steps)
    else:
        train = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_small", **common)
        sample = DDIMScheduler(num_train_timesteps=1000, **common)
        sample.set_timesteps(steps)
    return train, sample


def step_embedding(step: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """Sinusoidal embedding of the diffusion step (as in DDPM's U-Net): nearby steps get nearby codes."""
    half = dim // 2
    frequencies = torch.exp(-np.log(10_000) * torch.arange(half, device=step.device) / half)
    angles = step.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class MatrixDenoiser(nn.Module):
    """eps_theta(W_m, f_p(x), m): an MLP over [W_m ; projected features], each hidden layer scaled by a
    gate computed from the step m (the conditioning of LRA-diffusion's denoiser; here from a
    sinusoidal code of m, so that 1,000-step schedules share what they learn across steps)."""

    def __init__(self, num_classes: int, feature_dim: int, hidden: int = 256, condition_dim: int = 64,
                 step_dim: int = 64):
        super().__init__()
        self.size, self.step_dim = num_classes * num_classes, step_dim
        self.condition = nn.Linear(feature_dim, condition_dim)
        self.layers = nn.ModuleList([nn.Linear(self.size + condition_dim, hidden), nn.Linear(hidden, hidden),
                                     nn.Linear(hidden, hidden)])
        self.step_gates = nn.ModuleList([nn.Linear(step_dim, hidden) for _ in self.layers])
        self.out = nn.Linear(hidden, self.size)

    def forward(self, w: torch.Tensor, features: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        shape = w.shape
        code = step_embedding(step, self.step_dim)
        h = torch.cat([w.reshape(len(w), -1), self.condition(features)], dim=1)
        for layer, gate in zip(self.layers, self.step_gates):
            h = F.silu(layer(h) * (1 + gate(code)))
        return self.out(h).view(shape)


def train_matrix_diffusion(features: torch.Tensor, w_start: torch.Tensor, schedule: str = "paper",
                           steps: int = 10, epochs: int = 200, batch_size: int = 256, lr: float = 1e-3,
                           seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """Algorithm 1: fit eps_theta on pairs (features of x, starting matrix W_0(x)); returns the denoiser's
    state and the loss per epoch."""
    from tqdm import tqdm

    device = torch.device(device)
    train_scheduler, _ = make_schedulers(schedule, steps)
    num_train = train_scheduler.config.num_train_timesteps
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        feats, w0 = features.float().to(device), w_start.float().to(device)
        denoiser = MatrixDenoiser(w0.shape[-1], feats.shape[1]).to(device)
        optimizer = torch.optim.Adam(denoiser.parameters(), lr=lr)
        losses = []
        for _ in tqdm(range(epochs), desc="matrix diffusion", disable=not progress):
            order = torch.randperm(len(w0), device=device, generator=gen)
            total = 0.0
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                m = torch.randint(0, num_train, (len(idx),), device=device, generator=gen)
                eps = torch.randn(w0[idx].shape, device=device, generator=gen)
                w_m = train_scheduler.add_noise(w0[idx], eps, m)
                loss = F.mse_loss(denoiser(w_m, feats[idx], m), eps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            losses.append(total / len(w0))
    return {"denoiser": denoiser.state_dict(), "loss_per_epoch": losses}


@torch.no_grad()
def sample_matrices(denoiser: MatrixDenoiser, features: torch.Tensor, schedule: str = "paper", steps: int = 10,
                    start: str = "noise", w_start: torch.Tensor | None = None, seed: int = 0,
                    batch_size: int = 4096) -> torch.Tensor:
    """Algorithm 2: one W(x) per image, by the reverse process from W_M.

    ``start="noise"``: W_M ~ N(0, I), as the paper writes. ``start="forward"``: W_M drawn from
    q(W_M | W_0) with W_0 = ``w_start`` (the image's starting matrix), where the forward process
    actually ends when alpha_bar_M is far from 0.
    """
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if start == "forward" and w_start is None:
        raise ValueError("start='forward' noises the starting matrices: pass w_start")
    device = next(denoiser.parameters()).device
    train_scheduler, scheduler = make_schedulers(schedule, steps)
    gen = torch.Generator(device=device).manual_seed(seed)
    denoiser.eval()
    size = denoiser.size
    c = int(round(np.sqrt(size)))
    out = []
    for begin in range(0, len(features), batch_size):
        feats = features[begin:begin + batch_size].float().to(device)
        noise = torch.randn((len(feats), c, c), device=device, generator=gen)
        if start == "noise":
            w = noise
        else:
            first = torch.full((len(feats),), int(scheduler.timesteps[0]), device=device)
            w = train_scheduler.add_noise(w_start[begin:begin + batch_size].float().to(device), noise, first)
        for m in scheduler.timesteps:
            eps = denoiser(w, feats, torch.full((len(feats),), int(m), device=device))
            w = scheduler.step(eps, m, w, generator=gen).prev_sample
        out.append(w)
    return torch.cat(out)
