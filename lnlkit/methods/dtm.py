"""DTM: a diffusion model over instance-dependent transition matrices (Algorithm 3 of the paper).

Four cached stages run before training, each keyed by everything it depends on:

1. ``dtm-features``: the pre-trained encoder f_p. SimCLR on the training images (no labels),
   or, for the "without pre-training" ablation, the leading principal components of the pixels.
   The noisy validation split's images join in (as every training image does in the paper):
   the features then do not depend on the noise, and one stage serves every noise setting.
2. ``dtm-clusters``: K-means on the features; K = 10 x C in the paper.
3. ``dtm-cluster-transitions``: one VolMinNet matrix T_k per cluster, the starting matrices. A
   classifier head on the frozen features and the K matrices are learnt together with the
   forward-corrected NLL plus lambda times the mean log|det T_k| (VolMinNet's loss, per cluster).
4. ``dtm-diffusion``: the conditional DDPM over W (Algorithm 1) trained on pairs
   (f_p(x), W_0(x) = the W of x's cluster). Then, not cached because it takes a moment, one
   W(x) is sampled per training image (Algorithm 2) and turned into T(x) by DTM's transform
   (Sec. 3.4).

Training then minimises Eq. 7, the forward-corrected cross-entropy with each image's own
T(x). The paper leaves open, and the options name: the normalisation index of Sec. 3.4
(``normalise``), where the reverse process starts and on which schedule (``start``,
``schedule``: the paper's M = 10 never reaches noise), whether the classifier starts from the
SimCLR encoder (``init_classifier``), and the number of clusters on small data
(``images_per_cluster``). The ablations of Table 4: ``features="pixels"`` (without
pre-training), ``clustering=False`` (one starting matrix for all), ``diffusion=False`` (T(x) is
the cluster's starting matrix).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..matrix_diffusion import SCHEDULES, STARTS, MatrixDenoiser, sample_matrices, train_matrix_diffusion
from ..transition import dtm_transition, forward_corrected_nll, log_volume, volminnet_transition
from ..data import LabelledData, canonical_order
from ..files import digest
from .base import Method

FEATURES = ("simclr", "pixels")
NORMALISE = ("rows", "columns")


def volminnet_to_dtm_w(t: torch.Tensor) -> torch.Tensor:
    """A W whose DTM transform (rows) is exactly the row-stochastic ``t`` with a dominant diagonal.

    Row i of DTM's A is (sigmoid(w_i1), ..., 1 + sigmoid(w_ii), ...): the ratios T_ij / T_ii must be
    A_ij / A_ii. A_ii is chosen half-way between 1 and 1 / max_j(T_ij / T_ii), so that every
    A_ij = A_ii T_ij / T_ii stays inside (0, 1).
    """
    eye = torch.eye(t.shape[-1], dtype=torch.bool, device=t.device)
    ratio = t / torch.diagonal(t, dim1=-2, dim2=-1).unsqueeze(-1)
    largest = ratio.masked_fill(eye, 0).amax(-1, keepdim=True).clamp(1e-6, 1 - 1e-6)
    a_diag = ((1 + 1 / largest) / 2).clamp(max=1.999)
    a = (ratio * a_diag).clamp(1e-6, 1 - 1e-6)
    return torch.where(eye, torch.logit(a_diag - 1).expand_as(t), torch.logit(a))


def fit_cluster_transitions(features: torch.Tensor, noisy_labels: torch.Tensor, clusters: torch.Tensor,
                            num_clusters: int, num_classes: int, epochs: int = 100, batch_size: int = 256,
                            volume_weight: float = 1e-4, w_init: float = -2.0, lr: float = 1e-3,
                            transition_lr: float = 0.01, seed: int = 0) -> dict:
    """VolMinNet per cluster on frozen features: a classifier head and K matrices learnt together."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        head = nn.Sequential(nn.Linear(features.shape[1], 256), nn.ReLU(), nn.Linear(256, num_classes))
        w = nn.Parameter(torch.full((num_clusters, num_classes, num_classes), float(w_init)))
        optimizer = torch.optim.Adam([{"params": head.parameters(), "lr": lr}, {"params": [w], "lr": transition_lr}])
        feats, labels, groups = features.float(), noisy_labels.long(), clusters.long()
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=gen)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                t = volminnet_transition(w)
                loss = forward_corrected_nll(head(feats[idx]), t[groups[idx]], labels[idx]).mean() \
                    + volume_weight * log_volume(t)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return {"w": w.detach(), "transitions": volminnet_transition(w.detach())}


class DTM(Method):
    """Parameters
    ----------
    features : "simclr" or "pixels"
        f_p: a SimCLR encoder trained on the training images, or pixel principal components
        (Table 4's "without pre-training").
    simclr_epochs, diffusion_epochs, cluster_epochs : int
        Training length of the three learnt stages.
    clustering : bool
        False: one cluster, so every image starts from the same matrix (Table 4's "without clustering").
    clusters_per_class : int
        K = clusters_per_class x C (10 in the paper) ...
    images_per_cluster : int
        ... but at most N / images_per_cluster clusters, so that each starting matrix is learnt from
        enough images (on the 1,080 training digits: 21 clusters instead of 100; on CIFAR-10 the
        paper's 100).
    diffusion : bool
        False: T(x) is the starting matrix of x's cluster (Table 4's "without diffusion").
    schedule, steps : "paper" or "lra", int
        The paper's M = 10 steps with beta 1e-4 to 0.02, or a 1,000-step schedule sampled in
        ``steps`` DDIM steps.
    start : "noise" or "forward"
        Where sampling starts: N(0, I) as Algorithm 2 writes, or the image's starting matrix
        noised to the last step (where the paper's forward process really ends).
    normalise : "rows" or "columns"
        DTM's transform normalised over rows (what the text wants: rows sum to 1) or columns (the
        formula as printed).
    init_classifier : bool
        Start the classifier from the SimCLR encoder's weights (the paper does not say).
    one_matrix : bool
        A control, not the method: train with the mean of the sampled T(x) for every image, to
        tell what the per-image matrices add beyond their average.
    """

    name = "dtm"
    num_networks = 1
    example_options = {"simclr_epochs": 2, "cluster_epochs": 5, "diffusion_epochs": 5}

    def __init__(self, features: str = "simclr", simclr_epochs: int = 30, clustering: bool = True,
                 clusters_per_class: int = 10, images_per_cluster: int = 50, cluster_epochs: int = 100,
                 diffusion: bool = True, schedule: str = "paper", steps: int = 10, start: str = "noise",
                 diffusion_epochs: int = 100, normalise: str = "rows", init_classifier: bool = False,
                 one_matrix: bool = False, volume_weight: float = 1e-4, seed: int = 0):
        for option, value, allowed in [("features", features, FEATURES), ("schedule", schedule, SCHEDULES),
                                       ("start", start, STARTS), ("normalise", normalise, NORMALISE)]:
            if value not in allowed:
                raise ValueError(f"DTM's {option} must be one of {allowed}, got {value!r}")
        for option, value in [("simclr_epochs", simclr_epochs), ("clusters_per_class", clusters_per_class),
                              ("images_per_cluster", images_per_cluster), ("cluster_epochs", cluster_epochs),
                              ("steps", steps), ("diffusion_epochs", diffusion_epochs)]:
            if value < 1:
                raise ValueError(f"DTM's {option} must be at least 1, got {value}")
        if init_classifier and features != "simclr":
            raise ValueError("init_classifier starts the classifier from the SimCLR encoder: it needs "
                             "features='simclr'")
        self.features, self.simclr_epochs, self.clustering = features, simclr_epochs, clustering
        self.clusters_per_class, self.images_per_cluster, self.cluster_epochs = (clusters_per_class,
                                                                                 images_per_cluster, cluster_epochs)
        self.diffusion, self.schedule, self.steps, self.start = diffusion, schedule, steps, start
        self.diffusion_epochs, self.normalise, self.init_classifier = diffusion_epochs, normalise, init_classifier
        self.volume_weight, self.seed, self.one_matrix = volume_weight, seed, one_matrix
        self.num_clusters: int | None = None

    # ------------------------------------------------------------ stages

    def prepare(self, facts, stages) -> None:
        train, c = facts.train, facts.num_classes
        self.num_clusters = max(1, min(self.clusters_per_class * c, len(train) // self.images_per_cluster)) \
            if self.clustering else 1
        # Every image the run holds, validation included, in an order set by content alone.
        pool = train.inputs if facts.unlabelled_images is None else \
            np.concatenate([train.inputs, facts.unlabelled_images])
        order = canonical_order(pool)
        images = LabelledData(pool[order], np.zeros(len(pool)), train.classes, train.name, train.source)
        key = {"images": digest(images.inputs), "features": self.features, "seed": self.seed}
        if self.features == "simclr":
            key |= {"model": facts.model, "simclr_epochs": self.simclr_epochs}
        encoded = stages.run("dtm-features", key, lambda: self._features(images, facts))
        row_of = np.empty(len(pool), np.int64)
        row_of[order] = np.arange(len(pool))  # pool position -> row of the stage's features
        feats = encoded["features"].float()[row_of[:len(train)]]
        self.encoder_state, self.image_features = encoded.get("encoder"), feats

        key |= {"train_images": train.digest(noisy=False), "num_clusters": self.num_clusters}
        clusters = stages.run("dtm-clusters", key, lambda: self._clusters(feats))["clusters"].long()

        key |= {"noisy_labels": train.digest(), "cluster_epochs": self.cluster_epochs,
                "volume_weight": self.volume_weight}
        starting = stages.run("dtm-cluster-transitions", key, lambda: fit_cluster_transitions(
            feats, torch.as_tensor(train.noisy_labels), clusters, self.num_clusters, c, epochs=self.cluster_epochs,
            volume_weight=self.volume_weight, seed=self.seed))
        self.clusters, self.starting_transitions = clusters, starting["transitions"].float()
        w_start = volminnet_to_dtm_w(self.starting_transitions)[clusters]  # W_0(x): the cluster's matrix

        if self.diffusion:
            key |= {"schedule": self.schedule, "steps": self.steps, "diffusion_epochs": self.diffusion_epochs}
            trained = stages.run("dtm-diffusion", key, lambda: train_matrix_diffusion(
                feats, w_start, self.schedule, self.steps, self.diffusion_epochs, seed=self.seed,
                device=facts.device, progress=facts.progress))
            self.diffusion_loss = trained["loss_per_epoch"]
            # Sampling (Algorithm 2) is cheap and not cached: every start reuses one trained denoiser.
            denoiser = MatrixDenoiser(c, feats.shape[1]).to(facts.device)
            denoiser.load_state_dict(trained["denoiser"])
            w = sample_matrices(denoiser, feats.to(facts.device), self.schedule, self.steps, self.start,
                                w_start.to(facts.device), seed=self.seed).cpu()
        else:
            w = w_start
        self.transitions = dtm_transition(w, self.normalise)  # T(x) of every training image, (N, C, C)
        if self.one_matrix:  # the control: the same matrices' mean, one T for every image
            self.transitions = self.transitions.mean(0, keepdim=True).expand_as(self.transitions).clone()

    def _features(self, images, facts) -> dict:
        from ..simclr import pixel_features, train_simclr

        if self.features == "pixels":
            return {"features": pixel_features(images, seed=self.seed)}
        return train_simclr(images, model=facts.model, epochs=self.simclr_epochs, seed=self.seed,
                            device=facts.device, progress=facts.progress)

    def _clusters(self, feats: torch.Tensor) -> dict:
        from sklearn.cluster import KMeans

        if self.num_clusters == 1:
            return {"clusters": np.zeros(len(feats), np.int64)}
        kmeans = KMeans(self.num_clusters, n_init=3, random_state=self.seed).fit(feats.numpy())
        return {"clusters": kmeans.labels_.astype(np.int64)}

    # ------------------------------------------------------------ training

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.transitions = self.transitions.to(trainer.device)
        self.mean_transition = self.transitions.mean(0)
        if self.init_classifier:
            encoder = {k: v for k, v in self.encoder_state.items() if not k.startswith("head.")}
            for net in trainer.networks:
                net.load_state_dict(encoder, strict=False)

    def batch_loss(self, trainer, batch, epoch):
        with trainer.autocast():
            logits = trainer.networks[0](batch.inputs)
        loss = forward_corrected_nll(logits, self.transitions[batch.indices], batch.noisy_labels).mean()
        return loss, torch.ones_like(batch.noisy_labels, dtype=torch.bool)

    def validation_loss(self, logits, noisy_labels):
        # Validation images have no sampled T(x): the mean of the training images' T(x) stands in.
        return forward_corrected_nll(logits, self.mean_transition, noisy_labels)

    def transition_estimate(self) -> np.ndarray:
        return self.transitions.cpu().numpy()

    def transition_references(self) -> dict:
        return {"starting": self.starting_transitions[self.clusters].numpy()}

    def transition_groups(self) -> np.ndarray:
        return self.clusters.numpy()

    def options(self) -> dict:
        return {"features": self.features, "simclr_epochs": self.simclr_epochs, "clustering": self.clustering,
                "clusters_per_class": self.clusters_per_class, "images_per_cluster": self.images_per_cluster,
                "num_clusters": self.num_clusters, "cluster_epochs": self.cluster_epochs,
                "diffusion": self.diffusion, "schedule": self.schedule, "steps": self.steps, "start": self.start,
                "diffusion_epochs": self.diffusion_epochs, "normalise": self.normalise,
                "init_classifier": self.init_classifier, "one_matrix": self.one_matrix,
                "volume_weight": self.volume_weight, "seed": self.seed}
