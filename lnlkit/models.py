"""Classifiers: CIFAR ResNet-18/34 (3x3 stem, no max-pool) and small nets for the smoke profile.

Every model is a :class:`Classifier`: ``features(x)`` gives the penultimate features,
``forward(x)`` the logits, ``forward(x, with_features=True)`` both.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class Classifier(nn.Module):
    """A feature extractor followed by one linear head."""

    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, with_features: bool = False):
        feats = self.features(x)
        logits = self.head(feats)
        return (logits, feats) if with_features else logits


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet for 32x32 inputs: 3x3 stem with stride 1 and no max-pool (He et al.'s CIFAR variant).

    ``stem="imagenet"`` gives torchvision's 7x7 stride-2 stem with max-pool instead, which
    CausalNL's official code uses on CIFAR-10 (it shrinks a 32x32 image to 8x8 before the
    first block).
    """

    def __init__(self, blocks_per_stage, num_classes: int = 10, in_channels: int = 3, stem: str = "cifar"):
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        elif stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        stages, in_planes = [], 64
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.blocks = nn.Sequential(*stages)
        self.feature_dim = 512
        self.head = nn.Linear(512, num_classes)

    def features(self, x):
        out = self.blocks(self.stem(x))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels)


def resnet34(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels)


def resnet34_imagenet_stem(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels, stem="imagenet")


class SmallCNN(Classifier):
    """Three conv layers for small images (the 8x8 digits of the smoke profile)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*conv(in_channels, width), *conv(width, 2 * width), nn.MaxPool2d(2),
                                  *conv(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 4 * width
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x):
        return self.body(x)


class MLP(Classifier):
    """Two hidden layers for tabular inputs (two moons)."""

    def __init__(self, num_classes: int = 2, in_features: int = 2, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.feature_dim = hidden
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x):
        return self.body(x)


class PatchWhitening(nn.Module):
    """A fixed 2x2 convolution that whitens image patches (its filters are set from data, never trained).

    The filters are the eigenvectors of the covariance of 2x2 patches, scaled by 1/sqrt(eigenvalue),
    and their negatives, so the next non-linearity sees both signs (Jordan's airbench uses this
    first layer; it lets a small network learn in few epochs). Only the bias is trained.
    """

    def __init__(self, in_channels: int, eps: float = 5e-4):
        super().__init__()
        patch = 4 * in_channels
        self.eps = eps
        self.register_buffer("weight", torch.zeros(2 * patch, in_channels, 2, 2))
        self.bias = nn.Parameter(torch.zeros(2 * patch))
        self.out_channels = 2 * patch

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the filters from normalised training images ``x`` (N, C, H, W); labels are not used."""
        patches = F.unfold(x.float(), 2).transpose(1, 2).reshape(-1, self.weight.shape[1] * 4)
        patches = patches - patches.mean(0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors / torch.sqrt(eigenvalues + self.eps)).T.reshape(-1, *self.weight.shape[1:])
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))

    def forward(self, x):
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class CompactResNet(Classifier):
    """A small residual network for 32x32 images, shaped for a CPU budget (the ``cpu`` profile).

    Patch whitening (2x2, fixed), then three stages, each a down-sampling convolution
    (``conv3x3 -> max-pool`` or a stride-2 ``conv3x3``) -> BN -> activation, followed by a residual
    ``conv3x3 -> BN -> activation``; global max-pooling and a linear head. The layout follows the
    fastest known CIFAR-10 trainers (Page's ResNet-9, Jordan's airbench) at widths chosen by
    ``benchmarks/cpu_profile.py``. Name variants for ``build_model``:
    ``compact_resnet_w48_pool_gelu`` (base width 48: widths 48, 96, 192; max-pool; GELU).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths=(32, 64, 128), downsample: str = "pool",
                 activation: str = "gelu"):
        super().__init__()
        if downsample not in ("pool", "stride") or activation not in ACTIVATIONS:
            raise ValueError(f"downsample must be 'pool' or 'stride' and activation one of {sorted(ACTIVATIONS)}")
        self.whiten = PatchWhitening(in_channels)
        self.act = ACTIVATIONS[activation]
        stages, cin = [], self.whiten.out_channels
        for width in widths:
            stages.append(_CompactStage(cin, width, downsample, self.act))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.feature_dim = cin
        self.head = nn.Linear(cin, num_classes, bias=False)

    def init_from_data(self, x: torch.Tensor) -> None:
        self.whiten.init_from_data(x)

    def features(self, x):
        out = self.stages(self.act(self.whiten(x)))
        return torch.amax(out, dim=(2, 3))


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class _CompactStage(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: str, act):
        super().__init__()
        self.pool = downsample == "pool"
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1 if self.pool else 2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        x = self.conv1(x)
        x = self.act(self.bn1(F.max_pool2d(x, 2) if self.pool else x))
        return x + self.act(self.bn2(self.conv2(x)))


def compact_resnet(num_classes: int = 10, in_channels: int = 3, variant: str = "") -> CompactResNet:
    """``variant``: underscore-separated ``wN`` (base width N: widths N, 2N, 4N), ``pool``/``stride``,
    ``relu``/``gelu``; the defaults are the cpu profile's network."""
    width, options = 32, {}
    for token in filter(None, variant.split("_")):
        if token[0] == "w" and token[1:].isdigit():
            width = int(token[1:])
        elif token in ("pool", "stride"):
            options["downsample"] = token
        elif token in ACTIVATIONS:
            options["activation"] = token
        else:
            raise ValueError(f"unknown compact_resnet variant {token!r} (use wN, pool/stride, relu/gelu)")
    return CompactResNet(num_classes, in_channels, widths=(width, 2 * width, 4 * width), **options)


MODELS = {"compact_resnet": compact_resnet, "resnet18": resnet18, "resnet34": resnet34, "resnet34_imagenet_stem": resnet34_imagenet_stem,
          "small_cnn": SmallCNN, "mlp": MLP}


def build_model(name: str, num_classes: int, input_shape: tuple) -> Classifier:
    """A model by name; ``input_shape`` is one sample's shape, (H, W, C) for images or (D,)."""
    if name.startswith("compact_resnet_"):
        return compact_resnet(num_classes, int(input_shape[-1]), variant=name[len("compact_resnet_"):])
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)} (or a variant such as compact_resnet_w48_stride_gelu)")
    if name == "mlp":
        return MLP(num_classes, in_features=int(input_shape[0]))
    return MODELS[name](num_classes, in_channels=int(input_shape[-1]))
