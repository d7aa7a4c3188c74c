"""EchoSelect, the second step of EchoAlign: keep an original image when its edit stayed close to it.

After EchoMod has edited every training image toward its noisy label, the cosine similarity
between the features of the original and of its edit (Eq. 1 of the paper; CLIP image
features there) separates the two kinds of sample: an image whose label was already right
needs little change, a mislabelled one much. For each image the refined training set holds
exactly one sample (Sec. 4.2): the original when ``similarity >= tau``, else the edit, both
with the noisy label; it has the training set's size.

- :func:`feature_similarity`: Eq. 1, row by row;
- :func:`refined_set`: the paper's selection;
- :func:`group_weights`: the official code's variant (selected originals *and* all edits, each
  group weighted inversely to its size);
- :func:`selection_quality` and :func:`tau_sweep`: how good a selection is, measured with the
  clean labels (precision = the paper's "selection accuracy", coverage = share of the
  originals kept, Table 6 and Figure 8);
- :func:`kept_at_precision`: how many originals a threshold can keep at a given selection
  accuracy (the counts of Table 6);
- :func:`tau_from_noise_rate`: a threshold chosen without clean labels, from an estimate of
  the noise rate (keep the most similar 1 - rate of the originals); :func:`oracle_tau`: the
  threshold the clean labels would choose, to measure how far the first one lands.
"""

from __future__ import annotations

import numpy as np

from .stats import fewest_errors_threshold


def feature_similarity(original_features, edited_features) -> np.ndarray:
    """Cosine similarity of each original's features with its edit's (Eq. 1), shape (N,)."""
    a, b = np.asarray(original_features, np.float64), np.asarray(edited_features, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"features must both be (N, d), got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.clip(norms, 1e-12, None)


def refined_set(originals: np.ndarray, edits: np.ndarray, similarity, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """The paper's refined training set: per image the original if ``similarity >= tau``, else its edit.

    Returns (images, keep_original); the labels stay the noisy ones, in the same order.
    """
    originals, edits = np.asarray(originals), np.asarray(edits)
    if originals.shape != edits.shape:
        raise ValueError(f"originals {originals.shape} and edits {edits.shape} must have the same shape")
    keep = np.asarray(similarity) >= tau
    return np.where(keep.reshape(-1, *[1] * (originals.ndim - 1)), originals, edits), keep


def group_weights(keep_original) -> tuple[np.ndarray, np.ndarray]:
    """The official code's weighting: the selected originals and all N edits are trained on together,
    each group weighted inversely to its size, so both groups carry the same total weight.

    Returns (weights of the selected originals, weights of the edits), scaled so that the mean
    weight over all the samples used is 1.
    """
    keep = np.asarray(keep_original, bool)
    n_kept, n_edits = int(keep.sum()), len(keep)
    used = n_kept + n_edits
    kept = np.full(n_kept, used / (2.0 * n_kept)) if n_kept else np.zeros(0)
    return kept, np.full(n_edits, used / (2.0 * n_edits))


def selection_quality(keep_original, clean_labels, noisy_labels) -> dict:
    """How good a selection of originals is, judged with the clean labels.

    ``precision``: share of the kept originals whose noisy label is right (the paper's
    "selection accuracy"); ``coverage``: share of all originals kept (Figure 8(b));
    ``clean_recall``: share of the correctly labelled originals kept; ``kept``: how many.
    """
    keep = np.asarray(keep_original, bool)
    correct = np.asarray(clean_labels) == np.asarray(noisy_labels)
    kept = int(keep.sum())
    return {"kept": kept, "coverage": kept / len(keep),
            "precision": float(correct[keep].mean()) if kept else float("nan"),
            "clean_recall": float(keep[correct].mean()) if correct.any() else float("nan")}


def tau_sweep(similarity, clean_labels, noisy_labels, taus) -> list[dict]:
    """:func:`selection_quality` at each threshold (Figure 8)."""
    similarity = np.asarray(similarity)
    return [{"tau": float(t), **selection_quality(similarity >= t, clean_labels, noisy_labels)} for t in taus]


def kept_at_precision(similarity, clean_labels, noisy_labels, precision: float) -> dict:
    """The most originals any threshold keeps while its selection accuracy stays >= ``precision``
    (Table 6 of the paper counts them at 94-99 %), and that threshold.

    Keeping the k most similar originals is what a threshold does; the answer is the largest k
    whose kept set is at least ``precision`` correct (0 and tau = inf if none is).
    """
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"the selection accuracy must lie in (0, 1], got {precision}")
    similarity = np.asarray(similarity, float)
    order = np.argsort(-similarity, kind="stable")
    correct = (np.asarray(clean_labels) == np.asarray(noisy_labels))[order]
    running = np.cumsum(correct) / np.arange(1, len(order) + 1)
    # a threshold cannot split tied similarities: only the last of a run of ties is a possible k
    possible = np.append(similarity[order][1:] < similarity[order][:-1], True)
    ok = np.flatnonzero((running >= precision - 1e-12) & possible)
    if len(ok) == 0:
        return {"kept": 0, "tau": float("inf"), "precision": float("nan")}
    k = int(ok[-1]) + 1
    return {"kept": k, "tau": float(similarity[order][k - 1]), "precision": float(running[k - 1])}


def tau_from_noise_rate(similarity, noise_rate: float) -> float:
    """A threshold without clean labels: keep the most similar (1 - noise_rate) of the originals.

    The paper suggests calibrating tau from an estimate of the noise rate; this is the simplest
    such rule: were the similarities to rank every clean image above every noisy one, it
    would keep exactly the clean ones.
    """
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"the noise rate must lie in [0, 1), got {noise_rate}")
    return float(np.quantile(np.asarray(similarity), noise_rate))


def oracle_tau(similarity, clean_labels, noisy_labels) -> float:
    """The threshold with the fewest selection errors (a kept noisy original or a dropped clean one),
    found with the clean labels: the reference a label-free threshold is measured against."""
    return fewest_errors_threshold(similarity, np.asarray(clean_labels) != np.asarray(noisy_labels))
