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


MODELS = {"resnet18": resnet18, "resnet34": resnet34, "resnet34_imagenet_stem": resnet34_imagenet_stem,
          "small_cnn": SmallCNN, "mlp": MLP}


def build_model(name: str, num_classes: int, input_shape: tuple) -> Classifier:
    """A model by name; ``input_shape`` is one sample's shape, (H, W, C) for images or (D,)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    if name == "mlp":
        return MLP(num_classes, in_features=int(input_shape[0]))
    return MODELS[name](num_classes, in_channels=int(input_shape[-1]))
