"""Profiles: one training recipe per (profile, data set), shared by the methods unless their paper differs.

- ``smoke``: CPU, offline, embedded data (digits, two moons), small nets; seconds per run.
- ``quick``: GPU, CIFAR, ResNet-18, reduced epochs, one seed; minutes per run on an H100.
- ``paper``: Co-teaching's recipe (Adam 1e-3, 200 epochs, lr decay from epoch 80,
  batch 128) with the ResNet-34 that CausalNL's baselines use on CIFAR-10.
"""

from __future__ import annotations

from dataclasses import replace

from .trainer import TrainConfig

PROFILES = ("smoke", "cpu", "quick", "paper")

_RECIPES = {
    ("smoke", "digits"): dict(model="small_cnn", epochs=30, batch_size=64, decay_start=15, crop_padding=1,
                              flip=False, eval_batch_size=1024, channels_last=False),
    ("smoke", "moons"): dict(model="mlp", epochs=60, batch_size=64, decay_start=30, crop_padding=0, flip=False),
    ("cpu", "cifar10"): dict(model="compact_resnet", epochs=15, batch_size=512, optimizer="sgd", lr=0.2,
                             momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle", warmup=0.25,
                             crop_padding=2, flip=True, tta_flip=True, eval_batch_size=500),
    ("quick", "cifar10"): dict(model="resnet18", epochs=40, batch_size=128, decay_start=16),
    ("quick", "cifar100"): dict(model="resnet34", epochs=40, batch_size=128, decay_start=16),
    ("paper", "cifar10"): dict(model="resnet34", epochs=200, batch_size=128, decay_start=80),
    ("paper", "cifar100"): dict(model="resnet34", epochs=200, batch_size=128, decay_start=80),
}


# Where a method's own paper trains differently from Co-teaching's recipe.
# CausalNL (Appendix C and its code): Adam 1e-3 without decay, 150 epochs in the paper profile.
_METHOD_RECIPES = {
    ("causalnl", "smoke"): dict(schedule="constant"),
    ("causalnl", "quick"): dict(schedule="constant"),
    ("causalnl", "paper"): dict(schedule="constant", epochs=150),
    # VolMinNet (and Xia et al.'s protocol it follows): SGD 0.01, momentum 0.9, weight decay 1e-4,
    # lr x0.1 at epochs 30 and 60 of 80.
    ("volminnet", "paper"): dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="multistep",
                                 milestones=(30, 60), epochs=80),
}
# Transition-matrix methods select their model on a 10 % noisy validation split, in every profile.
for _method in ("forward", "volminnet", "dtm"):
    for _profile in PROFILES:
        _METHOD_RECIPES[(_method, _profile)] = {"val_fraction": 0.1} | _METHOD_RECIPES.get((_method, _profile), {})


def train_config(profile: str, dataset: str, method: str | None = None, **overrides) -> TrainConfig:
    """The TrainConfig of a profile for a data set (and method, where its paper differs), with any field overridden."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {PROFILES}")
    if (profile, dataset) not in _RECIPES:
        allowed = sorted(d for p, d in _RECIPES if p == profile)
        raise ValueError(f"profile {profile!r} runs on {allowed}, not {dataset!r}")
    recipe = dict(optimizer="adam", lr=1e-3, schedule="coteaching") | _RECIPES[(profile, dataset)]
    config = TrainConfig(**recipe | _METHOD_RECIPES.get((method, profile), {}))
    return replace(config, **overrides)
