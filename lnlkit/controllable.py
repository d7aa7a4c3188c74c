"""A controllable generator trained here: EchoMod's idea without Stable Diffusion's weights.

The paper edits an image toward its noisy label with a pre-trained text-to-image model kept
on the image's structure by a ControlNet on its Canny edges. Offline, lnlkit trains the same
kind of model at the data's own size, from diffusers' blocks, on the clean held-out split
only (proxy external knowledge, as OSA's proxy: the classifier never sees that split):

1. a class-conditional pixel-space DDPM, ``UNet2DConditionModel`` with a class embedding
   (the class index C stands for "no label", so that classifier-free guidance works), trained
   with the epsilon-prediction loss while the label is dropped with probability
   ``label_dropout``;
2. a ControlNet on the Canny map, ``ControlNetModel.from_unet``: a trainable copy of the
   UNet's encoder whose outputs enter the frozen UNet through zero-initialised
   convolutions, trained with the same loss. Before it learns anything it changes nothing.

:class:`TrainedEditor` then edits as SDEdit with control: noise the original to
``strength`` of the schedule, run DDIM back to an image with the noisy label and the
original's edge map as conditions, guidance ``guidance_scale``. It has the editing interface
of :class:`lnlkit.echomod.ControlNetEditor`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .echomod import canny_edges

TRAIN_TIMESTEPS = 1000  # the DDPM schedule of Ho et al.: beta linear from 1e-4 to 0.02


def build_generator(num_classes: int, channels: int, size: int, widths=(32, 64), seed: int = 0):
    """The class-conditional UNet and its ControlNet (edge map in, zero-initialised outputs)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=tuple(widths),
            down_block_types=("DownBlock2D",) * len(widths), up_block_types=("UpBlock2D",) * len(widths),
            mid_block_type="UNetMidBlock2D", layers_per_block=1, num_class_embeds=num_classes + 1,
            cross_attention_dim=8, norm_num_groups=8)  # no attention: the text input is unused
        # one conditioning block: the edge map stays at the image's size (pixel space, no latents)
        controlnet = ControlNetModel.from_unet(unet, conditioning_channels=1, conditioning_embedding_out_channels=(16,))
    return unet, controlnet


def _scheduler(kind: str = "ddpm"):
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDPMScheduler if kind == "ddpm" else DDIMScheduler
    return cls(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="linear", clip_sample=False)


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))).float() / 127.5 - 1.0


def from_unit(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def edge_maps(images: np.ndarray, low: int = 75, high: int = 75) -> torch.Tensor:
    """Canny edges as float (N, 1, H, W) in {0, 1}, the ControlNet's input."""
    return torch.from_numpy(canny_edges(images, low, high)).float().div(255.0).unsqueeze(1)


def _predict_noise(unet, controlnet, x, t, labels, edges):
    """epsilon(x_t, t | label, edges); without ``controlnet`` the base model alone."""
    context = x.new_zeros(len(x), 1, unet.config.cross_attention_dim)  # the unused text input
    extra = {}
    if controlnet is not None:
        down, mid = controlnet(x, t, context, controlnet_cond=edges, class_labels=labels, return_dict=False)
        extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
    return unet(x, t, context, class_labels=labels, **extra).sample


def _fit(unet, controlnet, trained, x0, labels, edges, *, epochs, batch_size, lr, label_dropout, gen, progress,
         desc) -> list[float]:
    """Epsilon-prediction training of the parameters ``trained`` (the UNet's or the ControlNet's)."""
    from tqdm import tqdm

    scheduler = _scheduler("ddpm")
    alphas = scheduler.alphas_cumprod.to(x0.device)
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    no_label = unet.config.num_class_embeds - 1
    losses = []
    for _ in tqdm(range(epochs), desc=desc, disable=not progress):
        order = torch.randperm(len(x0), generator=gen, device=x0.device)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, y = x0[idx], labels[idx].clone()
            y[torch.rand(len(y), generator=gen, device=x.device) < label_dropout] = no_label
            t = torch.randint(0, TRAIN_TIMESTEPS, (len(x),), generator=gen, device=x.device)
            noise = torch.randn(x.shape, generator=gen, device=x.device)
            a = alphas[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x + (1 - a).sqrt() * noise  # forward process q(x_t | x_0)
            loss = F.mse_loss(_predict_noise(unet, controlnet, x_t, t, y, edges[idx] if edges is not None else None),
                              noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x0))
    return losses


def train_generator(images: np.ndarray, labels, num_classes: int, *, base_epochs: int = 200,
                    control_epochs: int = 100, batch_size: int = 128, lr: float = 1e-3, label_dropout: float = 0.1,
                    widths=(32, 64), canny_low: int = 75, canny_high: int = 75, seed: int = 0,
                    device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """Train the base model, then its ControlNet with the base frozen, on clean ``images`` (uint8 NHWC).

    Returns the artefact (weights, configuration, loss per epoch of each phase) that
    :class:`TrainedEditor` edits with; a stage caches it.
    """
    device = torch.device(device)
    images = np.asarray(images)
    n, size, _, channels = images.shape
    unet, controlnet = build_generator(num_classes, channels, size, widths, seed)
    unet, controlnet = unet.to(device), controlnet.to(device)
    x0, y = to_unit(images).to(device), torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    edges = edge_maps(images, canny_low, canny_high).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    common = dict(batch_size=batch_size, lr=lr, label_dropout=label_dropout, gen=gen, progress=progress)
    unet.train()
    base_loss = _fit(unet, None, list(unet.parameters()), x0, y, None, epochs=base_epochs, desc="generator",
                     **common)
    unet.requires_grad_(False).eval()
    controlnet.train()
    control_loss = _fit(unet, controlnet, list(controlnet.parameters()), x0, y, edges, epochs=control_epochs,
                        desc="ControlNet", **common)
    return {"unet": unet.state_dict(), "controlnet": controlnet.state_dict(),
            "config": {"num_classes": num_classes, "channels": channels, "size": size, "widths": list(widths),
                       "canny_low": canny_low, "canny_high": canny_high, "label_dropout": label_dropout,
                       "base_epochs": base_epochs, "control_epochs": control_epochs, "seed": seed, "n_images": n},
            "base_loss": base_loss, "control_loss": control_loss}


class TrainedEditor:
    """Edit images toward labels with a generator from :func:`train_generator`.

    Parameters
    ----------
    artefact : dict
        What :func:`train_generator` returned.
    strength : float in (0, 1]
        How far along the schedule the original is noised before the reverse process (1: from
        pure noise, only the edges and the label remain).
    steps, guidance_scale : DDIM steps over the whole schedule, classifier-free guidance
        (1 = conditional model alone).
    control : bool
        Condition on the original's edge map (the ControlNet); False: the base model alone.
    seed : int
        Image i of a data set is edited with seed ``seed + i`` whatever batch it falls in.
    """

    def __init__(self, artefact: dict, *, strength: float = 0.8, steps: int = 20, guidance_scale: float = 2.0,
                 control: bool = True, seed: int = 0, batch_size: int = 256, device: str | torch.device = "cpu"):
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
        config = artefact["config"]
        self.device = torch.device(device)
        self.unet, self.controlnet = build_generator(config["num_classes"], config["channels"], config["size"],
                                                     config["widths"])
        self.unet.load_state_dict(artefact["unet"])
        self.controlnet.load_state_dict(artefact["controlnet"])
        self.unet.to(self.device).eval()
        self.controlnet.to(self.device).eval()
        self.config, self.strength, self.steps, self.guidance_scale = config, strength, steps, guidance_scale
        self.control, self.seed, self.batch_size = control, seed, batch_size

    def settings(self) -> dict:
        return {"generator": "trained here", **{k: self.config[k] for k in ("widths", "base_epochs", "control_epochs",
                                                                          "n_images", "label_dropout")},
                "strength": self.strength, "steps": self.steps, "guidance_scale": self.guidance_scale,
                "control": self.control, "canny_low": self.config["canny_low"],
                "canny_high": self.config["canny_high"], "seed": self.seed, "scheduler": "DDIM, eta 0"}

    @torch.no_grad()
    def edit(self, images: np.ndarray, labels, class_names=None, first_index: int = 0) -> np.ndarray:
        """The edits of ``images`` (uint8 (N, H, W, C)) toward ``labels``; image k uses seed
        ``seed + first_index + k``. ``class_names`` is unused (the labels are class indices)."""
        images, labels = np.asarray(images), np.asarray(labels)
        expected = (self.config["size"], self.config["size"], self.config["channels"])
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            raise ValueError(f"this generator edits uint8 images of shape {expected}, got {images.dtype} "
                             f"{images.shape[1:]}")
        scheduler = _scheduler("ddim")
        scheduler.set_timesteps(self.steps)
        timesteps = scheduler.timesteps[self.steps - max(1, round(self.strength * self.steps)):]
        no_label = self.config["num_classes"]
        edits = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            x0 = to_unit(batch).to(self.device)
            edges = edge_maps(batch, self.config["canny_low"], self.config["canny_high"]).to(self.device)
            noise = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(
                self.seed + first_index + start + k)) for k in range(len(batch))]).to(self.device)
            x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(len(x0)))
            y = torch.as_tensor(labels[start:start + len(batch)], dtype=torch.long, device=self.device)
            both = torch.cat([y, torch.full_like(y, no_label)])  # conditional and unconditional in one pass
            controlnet = self.controlnet if self.control else None
            for t in timesteps:
                eps = _predict_noise(self.unet, controlnet, x.repeat(2, 1, 1, 1), t.repeat(2 * len(x)).to(self.device),
                                     both, edges.repeat(2, 1, 1, 1))
                conditional, unconditional = eps.chunk(2)
                guided = unconditional + self.guidance_scale * (conditional - unconditional)
                x = scheduler.step(guided, t, x, eta=0.0).prev_sample
            edits.append(from_unit(x))
        return np.concatenate(edits) if edits else images[:0].copy()
