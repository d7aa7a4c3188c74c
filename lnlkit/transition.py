"""Transition matrices: parameterisations, the forward-corrected loss, estimators, and how far an
estimate of T(x) lies from the truth.

- W -> T: :func:`volminnet_transition` and :func:`dtm_transition` keep T row-stochastic with a
  dominant diagonal for any real W;
- losses: :func:`forward_corrected_nll` (Forward, VolMinNet, DTM's Eq. 7) and :func:`log_volume`;
- estimators: :func:`anchor_point_transition` (Forward);
- scores: :func:`transition_scores` and :func:`transition_report` (total variation, main flip
  class, NLL of the noisy label, beside the identity, class oracle and cluster oracle).

With synthetic noise the truth is known. For instance-dependent noise
(:func:`lnlkit.noise.instance_dependent_noise`) there are two truths per instance: the
*realised* row p_i, which contains the image-independent flip rate q_i, and the *estimable*
row T(x_i)_{y_i}, which keeps only what the image determines. A perfect estimator of T(x)
still shows an error of 2 |q_i - eps_bar| per instance against p_i, about 0.16 on CIFAR-10
IDN-40 %, so estimates are best judged against the estimable rows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def transition_error(estimated_rows, true_rows, clean_labels, num_classes: int | None = None) -> dict:
    """Row-l1 error ||T_hat(x_i)_{y_i} - T(x_i)_{y_i}||_1 per instance, its mean, and its mean per clean class.

    Parameters
    ----------
    estimated_rows, true_rows : arrays (N, C)
        The row of each instance's clean class: estimated, and true (realised or estimable).
        A class-level estimate T_hat is passed as ``T_hat[clean_labels]``.
    clean_labels : array (N,)
        The clean class of each instance (the row that is compared).
    """
    estimated_rows, true_rows = np.asarray(estimated_rows, float), np.asarray(true_rows, float)
    clean_labels = np.asarray(clean_labels)
    if estimated_rows.shape != true_rows.shape or estimated_rows.ndim != 2:
        raise ValueError(f"rows must both be (N, C), got {estimated_rows.shape} and {true_rows.shape}")
    if len(clean_labels) != len(true_rows):
        raise ValueError(f"{len(clean_labels)} clean labels for {len(true_rows)} rows")
    num_classes = num_classes or true_rows.shape[1]
    per_instance = np.abs(estimated_rows - true_rows).sum(1)
    counts = np.bincount(clean_labels, minlength=num_classes)
    sums = np.bincount(clean_labels, weights=per_instance, minlength=num_classes)
    per_class = np.divide(sums, counts, out=np.full(num_classes, np.nan), where=counts > 0)
    return {"per_instance": per_instance, "mean": float(per_instance.mean()), "per_class": per_class}


# ---------------------------------------------------------------- parameterisations W -> T
#
# Both keep T a row-stochastic matrix with a dominant diagonal whatever the free parameters W
# (C x C, any real values) are, so an optimizer (VolMinNet) or a diffusion model (DTM) can work
# on W without constraints.


def volminnet_transition(w: torch.Tensor) -> torch.Tensor:
    """VolMinNet (Li et al., 2021): T = row-normalise(I + sigmoid(W) * (1 - I)); W of shape (..., C, C).

    The diagonal entry before normalisation is 1 and each off-diagonal one lies in (0, 1), so
    T_ii > T_ij for every j != i.
    """
    eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
    a = eye + torch.sigmoid(w) * (1 - eye)
    return a / a.sum(-1, keepdim=True)


def dtm_transition(w: torch.Tensor, normalise: str = "rows") -> torch.Tensor:
    """DTM (Sec. 3.4): A_ii = 1 + sigmoid(w_ii), A_ij = sigmoid(w_ij), then normalised; W of shape (..., C, C).

    ``normalise="rows"`` divides each row by its sum, which is what the text says it wants (rows
    summing to 1, the diagonal the largest entry of each row). ``"columns"`` is the formula as
    printed, T_ij = A_ij / sum_k A_kj: its *columns* sum to 1, and its rows in general do not.
    """
    if normalise not in ("rows", "columns"):
        raise ValueError(f"normalise must be 'rows' or 'columns', got {normalise!r}")
    eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
    a = torch.sigmoid(w) + eye
    return a / a.sum(-1 if normalise == "rows" else -2, keepdim=True)


# ---------------------------------------------------------------- losses


def forward_corrected_nll(logits: torch.Tensor, transition: torch.Tensor, noisy_labels: torch.Tensor,
                          reduction: str = "none") -> torch.Tensor:
    """-log (T^T softmax(f(x)))_ỹ: the forward correction of Patrini et al. (2017), DTM's Eq. 7.

    ``transition`` is one (C, C) matrix for all samples or one per sample (B, C, C); entry
    [i, j] = P(ỹ = j | y = i, x), so the noisy posterior is p(ỹ | x) = sum_i p(y = i | x) T_i.
    With T = I this is the cross-entropy.
    """
    clean = logits.float().softmax(-1)
    t = transition.float()
    noisy = clean @ t if t.ndim == 2 else torch.einsum("bi,bij->bj", clean, t)
    return F.nll_loss(noisy.clamp_min(1e-12).log(), noisy_labels, reduction=reduction)


def log_volume(transition: torch.Tensor) -> torch.Tensor:
    """log |det T|: VolMinNet's volume penalty (minimised with weight lambda; mean over a stack of matrices)."""
    return torch.linalg.slogdet(transition.float())[1].mean()


# ---------------------------------------------------------------- estimators


def anchor_point_transition(noisy_probs, quantile: float = 0.97) -> np.ndarray:
    """Patrini et al.'s anchor-point estimate of a class-level T from a noisy-label classifier.

    An anchor of class i is an image that surely belongs to i, so its noisy posterior
    p(ỹ | x) is the row T_i. With ``quantile=1.0`` the anchor is the image with the largest
    p(ỹ = i | x), the estimator as derived. With ``quantile < 1`` it is the image with the
    largest p(ỹ = i | x) *below* that column's ``quantile`` (the original code's outlier
    filter, at 0.97: over-confident images are skipped). The original code zeroes the skipped
    entries in place, so later rows read a modified array; here every row is the anchor's
    unmodified posterior.
    """
    probs = np.asarray(noisy_probs, dtype=np.float64)
    if probs.ndim != 2 or not 0.0 < quantile <= 1.0:
        raise ValueError(f"need (N, C) probabilities and a quantile in (0, 1], got {probs.shape} and {quantile}")
    rows = []
    for i in range(probs.shape[1]):
        column = probs[:, i]
        if quantile < 1.0:
            column = np.where(column >= np.quantile(column, quantile, method="higher"), -np.inf, column)
        rows.append(probs[np.argmax(column)])
    t = np.array(rows)
    return t / t.sum(1, keepdims=True)


# ---------------------------------------------------------------- how good is an estimate of T(x)?


def _as_rows(estimate, clean_labels) -> np.ndarray:
    """The clean-class row of each sample from a (C, C) matrix, (N, C, C) matrices or (N, C) rows."""
    est = np.asarray(estimate, dtype=np.float64)
    if est.ndim == 2 and est.shape[0] == est.shape[1] and est.shape[0] != len(clean_labels):
        return est[clean_labels]
    if est.ndim == 3:
        return est[np.arange(len(clean_labels)), clean_labels]
    return est


def transition_scores(estimate, true_rows, clean_labels, noisy_labels) -> dict:
    """How well ``estimate`` matches the true rows T(x_i)_{y_i}, per sample and on average.

    - ``tv``: total variation 1/2 ||T_hat(x)_y - T(x)_y||_1 (0 = exact, 1 = disjoint);
    - ``main_flip``: the estimate's largest off-diagonal entry names the true row's main flip class;
    - ``nll``: -log T_hat(x)_{y, ỹ}, how surprised the estimate is by the noisy label actually drawn.
    Means are over samples; ``tv_per_class`` averages ``tv`` within each clean class.
    """
    clean, noisy = np.asarray(clean_labels), np.asarray(noisy_labels)
    est, true = _as_rows(estimate, clean), np.asarray(true_rows, dtype=np.float64)
    n, c = true.shape
    tv = _tv(est, true)
    off_est, off_true = est.copy(), true.copy()
    off_est[np.arange(n), clean] = -np.inf
    off_true[np.arange(n), clean] = -np.inf
    main_flip = off_est.argmax(1) == off_true.argmax(1)
    nll = -np.log(np.clip(est[np.arange(n), noisy], 1e-12, None))
    counts = np.bincount(clean, minlength=c)
    per_class = np.bincount(clean, weights=tv, minlength=c) / np.maximum(counts, 1)
    return {"tv": float(tv.mean()), "main_flip": float(main_flip.mean()), "nll": float(nll.mean()),
            "tv_per_class": per_class.tolist(), "tv_per_sample": tv}


def group_mean_rows(true_rows, clean_labels, groups=None) -> np.ndarray:
    """Each sample's row replaced by the mean true row of its (group, clean class): the best a per-group T can do.

    Without groups this is the class oracle (one T for all images, the class-level truth
    E[T(x) | y]); with cluster ids it is the cluster oracle.
    """
    true, clean = np.asarray(true_rows, dtype=np.float64), np.asarray(clean_labels)
    groups = np.zeros(len(clean), np.int64) if groups is None else np.asarray(groups, np.int64)
    keys = groups * true.shape[1] + clean
    _, inverse = np.unique(keys, return_inverse=True)
    sums = np.zeros((inverse.max() + 1, true.shape[1]))
    np.add.at(sums, inverse, true)
    return (sums / np.bincount(inverse)[:, None])[inverse]


def transition_report(estimate, true_rows, clean_labels, noisy_labels, clusters=None, others=None) -> dict:
    """Scores of ``estimate`` (and of any ``others``, name -> estimate) beside three references: the
    identity, the class oracle and (given the cluster of each sample) the cluster oracle.

    Besides the per-sample scores, ``tv_class_level`` compares averages: the estimate's mean row
    per clean class against the true one (for human labels, whose true rows are one-hot noisy
    labels, that is the empirical transition matrix); ``tv_cluster_level`` does the same per
    (cluster, class). Both are sample-weighted means. JSON-ready (no per-sample arrays)."""
    clean = np.asarray(clean_labels)
    c = np.asarray(true_rows).shape[1]
    class_truth = group_mean_rows(true_rows, clean)
    cluster_truth = None if clusters is None else group_mean_rows(true_rows, clean, clusters)
    candidates = {"estimate": estimate, **(others or {}), "identity": np.eye(c), "class_oracle": class_truth}
    if clusters is not None:
        candidates["cluster_oracle"] = cluster_truth
    report = {}
    for name, rows in candidates.items():
        scores = transition_scores(rows, true_rows, clean, noisy_labels)
        scores.pop("tv_per_sample")
        rows = _as_rows(rows, clean)
        scores["tv_class_level"] = _mean_tv(group_mean_rows(rows, clean), class_truth)
        if clusters is not None:
            scores["tv_cluster_level"] = _mean_tv(group_mean_rows(rows, clean, clusters), cluster_truth)
        report[name] = scores
    return report


def _tv(rows, other_rows) -> np.ndarray:
    """Total variation 1/2 ||a - b||_1 of each pair of rows."""
    return 0.5 * np.abs(np.asarray(rows) - np.asarray(other_rows)).sum(1)


def _mean_tv(rows, other_rows) -> float:
    return float(_tv(rows, other_rows).mean())
