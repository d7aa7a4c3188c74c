"""OSA: one-step noise mitigation with an external estimator (Li et al., 2024).

Once, before training, a frozen estimator embeds every training image x and its noisy label
y into one space and takes their cosine s(x, y) (Eq. 3). The space shift beta is the mean
cosine of random pairs (Eq. 4). A scoring function turns s into a weight w (Eq. 5), and the
target model minimises w x its per-sample loss (Eq. 6). Nothing else about training changes.

Two scoring functions, both zero at and below beta:

- ``paper`` (Eq. 5): with t = s - beta, w = -t^2 (t - 1) = t^2 (1 - t) for t > 0.
  It peaks at t = 2/3 with w = 4/27 (so the paper's "0 <= w <= 1" is loose) and falls back
  to 0 at t = 1.
- ``official`` (the released code's ``weight_function``): t = max(s - beta, 0) divided by its
  maximum over the training batch, then w = t^2 (1 - t^2); it peaks at t = 1/sqrt(2) with
  w = 1/4 and gives the most similar pair of every batch weight 0.

Deviation from the official code: it re-scores every augmented training batch; here each
training image is scored once, un-augmented, which is what makes OSA "one step".
"""

from __future__ import annotations

import os

import numpy as np
import torch
from scipy.stats import rankdata

from ..estimators import CLIP_PREPROCESSING, CLIPEstimator, Estimator, cached_proxy_estimator
from ..stats import auroc, fewest_errors_threshold  # noqa: F401 (part of OSA's interface)
from .base import Method

SCORINGS = ("paper", "official")


def osa_weight(similarity: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 5: w = -(s - beta)^2 (s - beta - 1) where s > beta, else 0."""
    shifted = similarity - beta
    return torch.where(shifted > 0, -shifted.square() * (shifted - 1), torch.zeros_like(shifted))


def official_weight(similarity: torch.Tensor, beta: float) -> torch.Tensor:
    """The official code: t = max(s - beta, 0) / max over the batch, w = t^2 (1 - t^2)."""
    shifted = (similarity - beta).clamp_min(0)
    t = shifted / shifted.max().clamp_min(1e-12)
    return t.square() * (1 - t.square())


SCORING_FUNCTIONS = {"paper": osa_weight, "official": official_weight}
THRESHOLDS = ("space_shift", "oracle")


@torch.no_grad()
def random_pair_similarities(estimator, num_pairs: int = 256, image_kind: str = "uniform",
                             class_kind: str | None = None, seed: int = 0) -> torch.Tensor:
    """Cosines of K random images with K random "texts": the K x K matrix (paper's Table 1)."""
    gen = torch.Generator().manual_seed(seed)
    images = estimator.random_images(num_pairs, image_kind, gen)
    classes = estimator.random_classes(num_pairs, class_kind or estimator.default_random_classes, gen)
    return images @ classes.T


def space_shift(estimator, num_pairs: int = 256, image_kind: str = "uniform", class_kind: str | None = None,
                seed: int = 0) -> float:
    """beta: the mean cosine between K random images and K random "texts" (Eq. 4).

    As in the official code all K x K image-text combinations are averaged, not only the K
    matched pairs of Eq. 4: the same expectation with less variance.
    """
    return float(random_pair_similarities(estimator, num_pairs, image_kind, class_kind, seed).mean())


# ---------------------------------------------------------------- noise-detection measures


def detection_metrics(weights, is_noisy) -> dict:
    """Noise detection with the threshold at beta: weight 0 means "noisy" (the paper's Table 10).

    The paper's "Acc" is the share of clean pairs kept as clean and its "Recall" the share of
    noisy pairs flagged as noisy; ``accuracy`` is the usual share of all pairs classed right.
    """
    weights, is_noisy = np.asarray(weights, dtype=float), np.asarray(is_noisy, dtype=bool)
    flagged = weights <= 0
    return {"clean_kept": float((~flagged[~is_noisy]).mean()) if (~is_noisy).any() else float("nan"),
            "noise_recall": float(flagged[is_noisy].mean()) if is_noisy.any() else float("nan"),
            "accuracy": float((flagged == is_noisy).mean()),
            "flagged_fraction": float(flagged.mean())}


def mean_noise_rank(weights, is_noisy) -> tuple[float, float]:
    """Table 9: rank samples by weight, largest first (rank 1); the mean rank of the noisy ones.

    Returns (mean noise rank, optimal mean noise rank). Tied weights share their average rank,
    so a method that gives many samples weight 0 is not credited with an arbitrary order.
    """
    weights, is_noisy = np.asarray(weights, dtype=float), np.asarray(is_noisy, dtype=bool)
    ranks = rankdata(-weights, method="average")
    n, k = len(weights), int(is_noisy.sum())
    return float(ranks[is_noisy].mean()), float(n - (k - 1) / 2)


# ---------------------------------------------------------------- the method


class OSA(Method):
    """Cross-entropy re-weighted by the estimator's cleanliness score (Eq. 6).

    ``estimator``: an :class:`lnlkit.estimators.Estimator`, ``"clip"`` (open_clip ViT-B/32,
    OpenAI weights) or ``"proxy"`` (trained on the run's clean held-out split).

    Two cached stages run before training: ``osa-proxy-estimator`` (the proxy's training, when
    ``estimator="proxy"``) and ``osa-scores`` (beta and the similarity of every training pair).
    An estimator passed as an object is used as it is, and its scores are not cached.

    ``threshold``: ``"space_shift"`` (beta of Eq. 4, the method) or ``"oracle"``: the similarity
    threshold that separates the run's clean and noisy pairs best (:func:`fewest_errors_threshold`).
    The oracle reads the clean labels: it is an upper reference for the choice of beta, not a method.

    ``clip_preprocessing``: how CLIP sees the images, ``"tensor"`` (a batched float bicubic
    resize, bf16 on GPU) or ``"official"`` (the released code: PIL bicubic on 8-bit images, fp16).
    When every similarity of a batch is at or below beta, the official scoring divides 0 by 0
    (NaN weights in the released code); ``official_weight`` returns 0 weights instead.
    """

    name = "osa"
    num_networks = 1
    example_options = {"estimator": "proxy"}
    example_held_out = 0.3

    def __init__(self, estimator: str | Estimator = "clip", scoring: str = "paper", num_random_pairs: int = 256,
                 random_images: str = "uniform", random_classes: str | None = None, seed: int = 0,
                 proxy_epochs: int = 30, proxy_model: str = "small_cnn", clip_preprocessing: str = "tensor",
                 threshold: str = "space_shift"):
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        for option, value in [("num_random_pairs", num_random_pairs), ("proxy_epochs", proxy_epochs)]:
            if value < 1:
                raise ValueError(f"OSA's {option} must be at least 1, got {value}")
        if threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
        self.threshold = threshold
        if clip_preprocessing not in CLIP_PREPROCESSING:
            raise ValueError(f"clip_preprocessing must be one of {CLIP_PREPROCESSING}, got {clip_preprocessing!r}")
        if isinstance(estimator, str) and estimator not in ("clip", "proxy"):
            raise ValueError(f"estimator must be 'clip', 'proxy' or an Estimator, got {estimator!r}")
        self.estimator, self.scoring, self.num_random_pairs = estimator, scoring, num_random_pairs
        self.random_images, self.random_classes, self.seed = random_images, random_classes, seed
        from ..models import build_model

        build_model(proxy_model, 10, (32, 32, 3))  # an unknown model name is refused now, not after the data
        self.proxy_epochs, self.proxy_model = proxy_epochs, proxy_model
        self.clip_preprocessing = clip_preprocessing
        self.score = SCORING_FUNCTIONS[scoring]
        self.measured: dict = {}

    # ------------------------------------------------------------ stages

    def _proxy_estimator(self, facts, stages):
        return cached_proxy_estimator(facts, stages, self.proxy_model, self.proxy_epochs, self.seed)

    def _estimator(self, facts, stages):
        if self.estimator == "clip":
            return CLIPEstimator.from_open_clip(facts.class_names, device=facts.device,
                                                preprocessing=self.clip_preprocessing)
        if self.estimator == "proxy":
            return self._proxy_estimator(facts, stages)
        return self.estimator

    def _scores(self, estimator, train) -> dict:
        random_classes = self.random_classes or estimator.default_random_classes
        beta = space_shift(estimator, self.num_random_pairs, self.random_images, random_classes, self.seed)
        # Scored once, un-augmented: the "one step" of OSA.
        images = torch.from_numpy(np.ascontiguousarray(train.inputs.transpose(0, 3, 1, 2)))
        similarity = estimator.pair_similarity(images, torch.as_tensor(train.noisy_labels))
        return {"beta": beta, "similarity": similarity.cpu(), "random_classes": random_classes}

    def prepare(self, facts, stages) -> None:
        if isinstance(self.estimator, str):
            depends_on = {"estimator": self.estimator, "train": facts.train.digest(),
                          "num_random_pairs": self.num_random_pairs, "random_images": self.random_images,
                          "random_classes": self.random_classes, "seed": self.seed}
            if self.estimator == "proxy":
                depends_on |= {"reference": facts.reference.digest(noisy=False) if facts.reference else None,
                               "proxy_epochs": self.proxy_epochs, "proxy_model": self.proxy_model}
            else:
                depends_on |= {"classes": facts.class_names, "clip_preprocessing": self.clip_preprocessing,
                               "weights": os.environ.get("LNLKIT_CLIP_WEIGHTS") or "ViT-B-32/openai"}
            scores = stages.run("osa-scores", depends_on, lambda: self._scores(self._estimator(facts, stages), facts.train))
        else:
            scores = self._scores(self.estimator, facts.train)
        self.beta, self.random_classes = float(scores["beta"]), scores["random_classes"]
        self.similarity = scores["similarity"].float()
        is_noisy = facts.train.noisy_labels != facts.train.labels
        space_shift_beta = self.beta
        if self.threshold == "oracle":  # reads the clean labels: a reference, not the method
            self.beta = fewest_errors_threshold(self.similarity.numpy(), is_noisy)
        # Measurement only: how well the weights separate clean from noisy pairs.
        weights = self.score(self.similarity, self.beta).numpy()
        rank, optimal = mean_noise_rank(weights, is_noisy)
        self.measured = {"beta": self.beta, "space_shift_beta": space_shift_beta, "mean_noise_rank": rank,
                         "optimal_noise_rank": optimal, "auroc": auroc(-self.similarity.numpy(), is_noisy),
                         **detection_metrics(weights, is_noisy)}

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.similarity = self.similarity.to(trainer.device)

    def sample_weights(self, batch) -> torch.Tensor:
        # The official scoring normalises by the batch maximum, so weights are made per batch.
        return self.score(self.similarity[batch.indices], self.beta)

    def options(self) -> dict:
        name = self.estimator if isinstance(self.estimator, str) else type(self.estimator).__name__
        return {"estimator": name, "scoring": self.scoring, "num_random_pairs": self.num_random_pairs,
                "random_images": self.random_images, "random_classes": self.random_classes,
                "seed": self.seed, "proxy_epochs": self.proxy_epochs, "proxy_model": self.proxy_model,
                "clip_preprocessing": self.clip_preprocessing, "threshold": self.threshold,
                **self.measured}
