"""CausalNL (Yao et al., NeurIPS 2021): learning with noisy labels under a structural causal model.

The data are assumed to come from  Y -> X <- Z  and  (X, Y) -> Ỹ  (paper Fig. 1, Eq. 1-2):

    P(X, Ỹ, Y, Z) = P(Y) P(Z) P(X | Y, Z) P(Ỹ | Y, X)

Each of two branches has four networks (paper Sec. 3.2):

    classifier           q(Y | X)       the trainer's network b; ŷ = Gumbel-softmax(logits)
    latent_encoder       q(Z | Y, X)    mean and log-variance of a Gaussian over z
    image_decoder        p(X | Y, Z)    the reconstruction x̂
    noisy_label_decoder  p(Ỹ | Y, X)    logits of the noisy label, computed from (x̂, ŷ)

and each branch minimises the negative ELBO of Eq. 6 in the empirical form of Appendix B,

    beta0 * reconstruction + beta1 * noisy_label_nll + beta2 * negative_entropy + beta3 * kl_z,

while the two classifiers also teach each other with Co-teaching's small-loss exchange.
The official code differs from the paper in five ways in the ELBO (see :data:`OFFICIAL_CODE`)
and in Co-teaching's three details (:mod:`lnlkit.methods.coteaching`); each is an option, the
paper's version is the default, and ``official_code=True`` sets them all.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Method
from .coteaching import CoTeaching

# The official code's choices where it departs from the paper (read from its released source).
OFFICIAL_CODE = {
    "reconstruction": "mse",  # paper: l1 ("we use the l1 loss for reconstruction")
    "kl_reduction": "sum",  # summed over batch and dimensions; paper: per sample, batch mean
    "kl_half": False,  # -sum(1 + log s^2 - mu^2 - s^2) without the 1/2 of the Gaussian KL
    "latent_noise": "uniform",  # torch.rand_like in the reparameterisation (a bug); paper: N(0, I)
    "entropy_gradient": False,  # the entropy term is computed as a constant; paper: it regularises q(Y|X)
}


def conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU()]


def deconv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU()]


class ConvLabelEncoder(nn.Module):
    """(x, y) -> vector, the official code's encoder for images.

    The label is mapped to one extra image channel (Linear C -> H*W), stacked with a 1x1
    convolution of x, then halved in size by each stride-2 conv block (32/64/128/256
    channels on 32x32 images, down to 2x2).
    """

    def __init__(self, image_size: int, in_channels: int, num_classes: int, widths: tuple, out_features: int):
        super().__init__()
        self.image_size = image_size
        self.label_map = nn.Linear(num_classes, image_size * image_size)
        self.input_map = nn.Conv2d(in_channels, in_channels, 1)
        layers, cin = [], in_channels + 1
        for width in widths:
            layers += conv_block(cin, width)
            cin = width
        self.body = nn.Sequential(*layers, nn.Flatten())
        side = image_size // 2 ** len(widths)
        self.out = nn.Linear(widths[-1] * side * side, out_features)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        label_plane = self.label_map(y).view(-1, 1, self.image_size, self.image_size)
        return self.out(self.body(torch.cat([self.input_map(x), label_plane], dim=1)))


class ConvImageDecoder(nn.Module):
    """(y, z) -> x̂ in [0, 1]: Linear to a 2x2 map, transposed convs doubling the size, sigmoid."""

    def __init__(self, image_size: int, out_channels: int, num_classes: int, widths: tuple, z_dim: int):
        super().__init__()
        self.side = image_size // 2 ** len(widths)
        self.widths = tuple(reversed(widths))  # 256, 128, 64, 32 on 32x32 images
        self.inp = nn.Linear(z_dim + num_classes, self.widths[0] * self.side * self.side)
        layers = []
        for cin, cout in zip(self.widths, self.widths[1:]):
            layers += deconv_block(cin, cout)
        layers += deconv_block(self.widths[-1], self.widths[-1])
        layers += [nn.Conv2d(self.widths[-1], out_channels, 3, 1, 1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([z, y], dim=1)).view(-1, self.widths[0], self.side, self.side)
        return self.body(h)


class ConcatMLP(nn.Module):
    """Two hidden layers on the concatenated inputs: (x, y) -> vector for the encoders, (y, z) -> x̂
    for the decoder on feature inputs (two moons), with a linear output (standardised features)."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(),
                                  nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, out_features))

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat(parts, dim=1))


class CausalBranch(nn.Module):
    """The generative half of one branch: q(Z|Y,X), p(X|Y,Z) and p(Ỹ|Y,X)."""

    def __init__(self, latent_encoder: nn.Module, image_decoder: nn.Module, noisy_label_decoder: nn.Module):
        super().__init__()
        self.latent_encoder, self.image_decoder = latent_encoder, image_decoder
        self.noisy_label_decoder = noisy_label_decoder


def image_widths(image_size: int) -> tuple:
    """Conv widths that take an image down to 2x2: (32, 64, 128, 256) for 32x32, (32, 64) for 8x8."""
    steps = image_size.bit_length() - 2
    if image_size != 2 ** (steps + 1) or steps < 1:
        raise ValueError(f"CausalNL's conv networks need a square power-of-two image size >= 4, got {image_size}")
    return tuple(32 * 2 ** i for i in range(steps))


def build_branch(input_shape: tuple, num_classes: int, z_dim: int) -> CausalBranch:
    """Networks for one sample shape: (H, W, C) images get conv nets, (D,) features get MLPs."""
    if len(input_shape) == 3:
        size, _, channels = input_shape
        widths = image_widths(int(size))
        return CausalBranch(ConvLabelEncoder(size, channels, num_classes, widths, 2 * z_dim),
                            ConvImageDecoder(size, channels, num_classes, widths, z_dim),
                            ConvLabelEncoder(size, channels, num_classes, widths, num_classes))
    (features,) = input_shape
    return CausalBranch(ConcatMLP(features + num_classes, 2 * z_dim), ConcatMLP(num_classes + z_dim, features),
                        ConcatMLP(features + num_classes, num_classes))


def default_z_dim(input_shape: tuple) -> int:
    """25 for 32x32 images and 1 for two-moons features (the paper); 4 for the 8x8 digits (ours)."""
    if len(input_shape) == 1:
        return 1
    return 25 if input_shape[0] >= 32 else 4


# ---------------------------------------------------------------- the terms of the negative ELBO


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, half: bool = True) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per sample: -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2);
    ``half=False`` drops the 1/2 as the official code does (twice the KL)."""
    return -(0.5 if half else 1.0) * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """sum_y q(y|x) log q(y|x) per sample; KL(q(Y|x) || uniform) = this + log C."""
    log_q = F.log_softmax(logits, dim=1)
    return (log_q.exp() * log_q).sum(dim=1)


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """(1/d) ||x - x̂||_1 per sample (Appendix B), or the mean squared error (official code)."""
    diff = (x - x_hat).flatten(1)
    return diff.abs().mean(dim=1) if kind == "l1" else diff.pow(2).mean(dim=1)


class CausalNL(Method):
    """Parameters
    ----------
    rate : float or None
        Co-teaching's final forget rate between the two classifiers (None: the noise rate).
    z_dim : int or None
        Dimension of Z; None picks :func:`default_z_dim` for the data.
    recon_weight, noisy_label_weight, entropy_weight, kl_weight : float
        beta0, beta1, beta2, beta3 of Appendix B (0.1, 0.1, 1e-5, 0.01).
    reconstruction : "l1" or "mse"
        The paper's l1 or the official code's mean squared error.
    kl_reduction : "mean" or "sum"
        KL per sample averaged over the batch (the ELBO per data point), or the official
        code's sum over the batch, which weights it batch-size times more.
    kl_half : bool
        The Gaussian KL with its factor 1/2 (paper), or without it (official code: twice the KL).
    latent_noise : "normal" or "uniform"
        epsilon in z = mu + sigma * epsilon: N(0, I) as the reparameterisation trick needs,
        or the official code's U(0, 1) (a bug: it biases z by sigma / 2 and shrinks its spread).
    entropy_gradient : bool
        Whether -beta2 * H(q(Y|x)) pushes on the classifier (paper) or is a constant (code).
    temperature : float
        Gumbel-softmax temperature for ŷ (1, soft samples, as the code).
    official_code : bool
        Shorthand for the options of :data:`OFFICIAL_CODE` and Co-teaching's ``official_code``
        (the code's forget-rate ramp, kept count rounded down, loss divided by the kept count).
    """

    name = "causalnl"
    num_networks = 2

    def __init__(self, rate: float | None = None, z_dim: int | None = None, ramp_epochs: int = 10,
                 recon_weight: float = 0.1, noisy_label_weight: float = 0.1, entropy_weight: float = 1e-5,
                 kl_weight: float = 0.01,
                 reconstruction: str = "l1", kl_reduction: str = "mean", kl_half: bool = True,
                 latent_noise: str = "normal", entropy_gradient: bool = True, temperature: float = 1.0,
                 official_code: bool = False):
        if official_code:
            reconstruction, kl_reduction = OFFICIAL_CODE["reconstruction"], OFFICIAL_CODE["kl_reduction"]
            kl_half, latent_noise = OFFICIAL_CODE["kl_half"], OFFICIAL_CODE["latent_noise"]
            entropy_gradient = OFFICIAL_CODE["entropy_gradient"]
        for option, value, allowed in [("reconstruction", reconstruction, ("l1", "mse")),
                                       ("kl_reduction", kl_reduction, ("mean", "sum")),
                                       ("latent_noise", latent_noise, ("normal", "uniform"))]:
            if value not in allowed:
                raise ValueError(f"{option} must be one of {allowed}, got {value!r}")
        if z_dim is not None and z_dim < 1:
            raise ValueError(f"z_dim must be at least 1, got {z_dim}")
        if temperature <= 0 or min(recon_weight, noisy_label_weight, entropy_weight, kl_weight) < 0:
            raise ValueError("CausalNL's temperature must be positive and its term weights non-negative")
        self.z_dim = z_dim
        # holds the forget rate, its ramp and the co-teaching loss between the classifiers
        self.coteaching = CoTeaching(rate, ramp_epochs, official_code=official_code)
        self.weights = {"reconstruction": recon_weight, "noisy_label_nll": noisy_label_weight,
                        "negative_entropy": entropy_weight, "kl_z": kl_weight}
        self.reconstruction, self.kl_reduction, self.kl_half = reconstruction, kl_reduction, kl_half
        self.latent_noise = latent_noise
        self.entropy_gradient, self.temperature = entropy_gradient, temperature
        self.official_code = official_code
        self.last_terms: dict = {}

    def prepare(self, facts, stages) -> None:
        self.coteaching.prepare(facts, stages)

    def auxiliary_networks(self, trainer) -> list[nn.Module]:
        shape = trainer.input_shape  # (H, W, C) or (D,)
        if self.z_dim is None:
            self.z_dim = default_z_dim(shape)
        num_classes = trainer.num_classes
        return [build_branch(shape, num_classes, self.z_dim) for _ in range(self.num_networks)]

    def reconstruction_target(self, trainer, x: torch.Tensor) -> torch.Tensor:
        """Images back in [0, 1] (the sigmoid decoder's range); standardised features as they are."""
        data = trainer.train
        if not data.is_image:
            return x
        return x * data.std.view(1, -1, 1, 1) + data.mean.view(1, -1, 1, 1)

    def sample_latent(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        eps = torch.randn_like(mu) if self.latent_noise == "normal" else torch.rand_like(mu)
        return mu + (0.5 * logvar).exp() * eps

    def branch_forward(self, branch: CausalBranch, logits: torch.Tensor, x: torch.Tensor) -> dict:
        """One pass through a branch given the classifier's logits and the target-space input x."""
        y_soft = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=False)
        mu, logvar = branch.latent_encoder(x, y_soft).float().chunk(2, dim=1)
        z = self.sample_latent(mu, logvar)
        x_hat = branch.image_decoder(y_soft, z)
        noisy_logits = branch.noisy_label_decoder(x_hat, y_soft)
        return {"mu": mu, "logvar": logvar, "x_hat": x_hat.float(), "noisy_logits": noisy_logits.float()}

    def elbo_terms(self, out: dict, logits: torch.Tensor, x: torch.Tensor, noisy_labels: torch.Tensor) -> dict:
        """The four terms of the negative ELBO (Eq. 6, Appendix B), each a scalar for the batch."""
        kl = gaussian_kl(out["mu"], out["logvar"], half=self.kl_half)
        entropy_logits = logits.float() if self.entropy_gradient else logits.float().detach()
        return {
            # -E_q[log p(x | y, z)] with a Laplace (l1) or Gaussian (mse) likelihood
            "reconstruction": reconstruction_error(x.float(), out["x_hat"], self.reconstruction).mean(),
            # -E_q[log p(ỹ | y, x)]
            "noisy_label_nll": F.cross_entropy(out["noisy_logits"], noisy_labels),
            # kl(q(Y|x) || uniform) up to the constant log C
            "negative_entropy": negative_entropy(entropy_logits).mean(),
            # E_y[kl(q(Z|y,x) || N(0, I))], one Gumbel-softmax sample of y
            "kl_z": kl.sum() if self.kl_reduction == "sum" else kl.mean(),
        }

    def batch_loss(self, trainer, batch, epoch):
        x = self.reconstruction_target(trainer, batch.inputs)
        with trainer.autocast():
            logits = [net(batch.inputs).float() for net in trainer.networks]
            outs = [self.branch_forward(branch, lg, x) for branch, lg in zip(trainer.auxiliary, logits)]
        elbo = 0.0
        terms = []
        for out, lg in zip(outs, logits):
            branch_terms = self.elbo_terms(out, lg, x, batch.noisy_labels)
            elbo = elbo + sum(self.weights[k] * v for k, v in branch_terms.items())
            terms.append(branch_terms)
        # Co-teaching between the two classifiers q(Y|X) (Algorithm 1, line 5).
        ce = [F.cross_entropy(lg, batch.noisy_labels, reduction="none") for lg in logits]
        masks = self.coteaching.select([loss.detach() for loss in ce], batch, epoch)
        self.last_terms = {k: v.detach() for k, v in terms[0].items()}  # branch 1's terms, for inspection
        return elbo + self.coteaching.reduce(ce, None, masks), masks[0]

    @torch.no_grad()
    def explain(self, x: torch.Tensor, branch: int = 0) -> dict:
        """Everything branch ``branch`` infers for normalised inputs ``x`` (eval mode, ŷ = q(Y|x) itself)."""
        trainer = self.trainer
        net, parts = trainer.networks[branch], trainer.auxiliary[branch]
        net.eval()
        parts.eval()
        logits = net(x).float()
        target = self.reconstruction_target(trainer, x)
        q_y = logits.softmax(dim=1)
        mu, logvar = parts.latent_encoder(target, q_y).float().chunk(2, dim=1)
        x_hat = parts.image_decoder(q_y, mu).float()
        noisy_probs = parts.noisy_label_decoder(x_hat, q_y).float().softmax(dim=1)
        return {"q_y": q_y, "mu": mu, "logvar": logvar, "x": target, "x_hat": x_hat, "noisy_probs": noisy_probs}

    @torch.no_grad()
    def transition_estimate(self, branch: int = 0) -> np.ndarray:
        """T(x) of every training image as the noisy-label decoder models it: row y is
        p(Ỹ | Y = y, x̂) with x̂ decoded from (y, the posterior mean of z given x and y)."""
        trainer = self.trainer
        parts = trainer.auxiliary[branch].eval()
        eye = torch.eye(trainer.num_classes, device=trainer.device)
        matrices = []
        for _, x in trainer.train.batches(trainer.config.eval_batch_size):
            target = trainer.prepare(self.reconstruction_target(trainer, x))
            rows = []
            for c in range(trainer.num_classes):
                y = eye[c].expand(len(x), -1)
                mu, _ = parts.latent_encoder(target, y).float().chunk(2, dim=1)
                x_hat = parts.image_decoder(y, mu)
                rows.append(parts.noisy_label_decoder(x_hat, y).float().softmax(1))
            matrices.append(torch.stack(rows, dim=1))
        return torch.cat(matrices).cpu().numpy()

    def options(self):
        return {"rate": self.coteaching.rate, "z_dim": self.z_dim, "ramp_epochs": self.coteaching.ramp_epochs,
                "weights": self.weights,
                "reconstruction": self.reconstruction, "kl_reduction": self.kl_reduction, "kl_half": self.kl_half,
                "latent_noise": self.latent_noise, "entropy_gradient": self.entropy_gradient,
                "temperature": self.temperature, "official_code": self.official_code}
