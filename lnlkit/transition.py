"""Transition matrices: how far an estimate of T(x) lies from the truth.

With synthetic noise the truth is known. For instance-dependent noise
(:func:`lnlkit.noise.instance_dependent_noise`) there are two truths per instance: the
*realised* row p_i, which contains the image-independent flip rate q_i, and the *estimable*
row T(x_i)_{y_i}, which keeps only what the image determines. A perfect estimator of T(x)
still shows an error of 2 |q_i - eps_bar| per instance against p_i, about 0.16 on CIFAR-10
IDN-40 %, so estimates are best judged against the estimable rows.
"""

from __future__ import annotations

import numpy as np


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
