"""Theorem 3.1 of EchoAlign, checked on data: what instance modification does to the features.

The theorem compares training on the original instances X with training on the modified
ones X' (each image edited toward its noisy label). Its four claims hold under sufficient
conditions (Appendix A of the paper); these functions measure the quantities the claims and
conditions are about, on features of the originals and of the edits:

- :func:`mutual_information_bits`: claim 1 and Figure 5(a), a lower bound on the mutual
  information between features and labels;
- :func:`prediction_variance`: Figure 5(b), how much least-squares predictions move across
  bootstrap resamples of the training set;
- :func:`design_conditions`: conditions A3 (the feature radius does not grow) and A4 (the
  design is no worse conditioned) of claims 3 and 4, and the worst-case prediction variance
  of the linear illustration they bound;
- :func:`two_sample_accuracy`: the distribution shift between originals and edits, as the
  accuracy of a classifier that tells them apart.
"""

from __future__ import annotations

import numpy as np


def _linear_classifier(seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def _entropy_bits(labels) -> float:
    p = np.bincount(np.asarray(labels)) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_information_bits(features, labels, folds: int = 5, seed: int = 0) -> float:
    """A lower bound on I(F; L) in bits: H(L) minus the cross-validated cross-entropy of a linear
    classifier that predicts L from F.

    For any model q, I(F; L) >= H(L) - E[-log2 q(L | F)] (the variational bound); held-out
    predictions keep the classifier from memorising. The estimate can come out slightly below 0
    when F says nothing about L.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    features, labels = np.asarray(features, float), np.asarray(labels)
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    classes = np.unique(labels)
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(_linear_classifier(seed), features, labels, cv=split, method="predict_proba")
    column = np.searchsorted(classes, labels)
    cross_entropy = -np.log2(np.clip(proba[np.arange(len(labels)), column], 1e-12, None)).mean()
    return _entropy_bits(labels) - float(cross_entropy)


def prediction_variance(train_features, labels, test_features, resamples: int = 20, seed: int = 0) -> float:
    """Variance of least-squares predictions on ``test_features`` across bootstrap resamples of the
    training set, averaged over test points and classes (Figure 5(b); claim 3's linear illustration).

    Each resample fits ordinary least squares, with an intercept, from the features to the one-hot
    labels; the returned number is the mean over test points and classes of the variance of the
    fitted values across resamples.
    """
    train_features, labels = np.asarray(train_features, float), np.asarray(labels)
    test_features = np.asarray(test_features, float)
    targets = np.eye(int(labels.max()) + 1)[labels]
    design = np.hstack([np.ones((len(train_features), 1)), train_features])
    test_design = np.hstack([np.ones((len(test_features), 1)), test_features])
    rng = np.random.default_rng(seed)
    predictions = []
    for _ in range(resamples):
        pick = rng.integers(0, len(labels), len(labels))
        beta = np.linalg.lstsq(design[pick], targets[pick], rcond=None)[0]
        predictions.append(test_design @ beta)
    return float(np.var(predictions, axis=0).mean())


def design_conditions(original_features, modified_features) -> dict:
    """Appendix A's sufficient conditions for claims 3 and 4, in feature space.

    ``radius``: the largest feature norm (A3: it must not grow); ``lambda_min``: the smallest
    eigenvalue of the design's Gram matrix F^T F (A4: it must not shrink). In the linear
    illustration the worst prediction variance over inputs of norm <= radius is
    sigma^2 radius^2 / lambda_min (sigma = 1 here): ``worst_case_variance``.
    """
    out = {}
    for name, f in [("original", original_features), ("modified", modified_features)]:
        f = np.asarray(f, float)
        radius = float(np.linalg.norm(f, axis=1).max())
        lambda_min = float(np.linalg.eigvalsh(f.T @ f)[0])
        out[name] = {"radius": radius, "lambda_min": lambda_min,
                     "worst_case_variance": radius ** 2 / lambda_min if lambda_min > 0 else float("inf")}
    out["a3_holds"] = out["modified"]["radius"] <= out["original"]["radius"]
    out["a4_holds"] = out["modified"]["lambda_min"] >= out["original"]["lambda_min"]
    return out


def two_sample_accuracy(first, second, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a linear classifier telling ``first`` from ``second`` (equal-sized
    samples): 0.5 when it cannot (no shift it can see), 1 when the two never overlap."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    first, second = np.asarray(first, float), np.asarray(second, float)
    x = np.concatenate([first, second])
    y = np.concatenate([np.zeros(len(first), int), np.ones(len(second), int)])
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(_linear_classifier(seed), x, y, cv=split).mean())
