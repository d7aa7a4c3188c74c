"""The statistics every table uses: mean ± 95 % interval over seeds, paired differences, AUROC.

Runs are repeated over seeds; a table reports the mean and the half-width of a Student-t
confidence interval. Two methods run on the same seeds (same noisy labels, same training
seed) are compared by the interval of their per-seed differences, which removes the part of
the spread the seeds share; a verdict is read off that interval, never off two means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float  # nan with a single value
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def format(self, digits: int = 1) -> str:
        """'91.6 ± 3.2' (or '91.6' from a single value, whose interval is unknown)."""
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def __str__(self) -> str:
        return self.format()


def mean_ci(values, confidence: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval of independent repeats (e.g. one value per seed)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        raise ValueError("mean_ci needs at least one value")
    if len(values) == 1:
        return Interval(float(values[0]), float("nan"), 1, confidence)
    sem = values.std(ddof=1) / np.sqrt(len(values))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sem)
    return Interval(float(values.mean()), half, len(values), confidence)


def paired_difference(a: dict, b: dict, confidence: float = 0.95) -> Interval:
    """Interval of a - b over the keys (seeds) both have: the paired comparison of two methods."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("paired_difference needs runs of both methods on at least one common seed")
    return mean_ci([a[k] - b[k] for k in common], confidence)


def verdict(difference: Interval, name_a: str, name_b: str, unit: str = " points", detail: bool = True) -> str:
    """A sentence read off the interval of a - b: which is better, or that the runs cannot tell.

    With ``detail`` the difference, its interval and the number of paired seeds follow in brackets.
    """
    if difference.n < 2:
        return f"{name_a} − {name_b} = {difference.mean:+.1f}{unit} from one seed: no interval, no verdict"
    if difference.low > 0:
        sentence = f"{name_a} is better than {name_b}"
    elif difference.high < 0:
        sentence = f"{name_b} is better than {name_a}"
    else:
        sentence = f"no difference resolved between {name_a} and {name_b}"
    if not detail:
        return sentence
    level = f"{100 * difference.confidence:.0f} % CI"
    return (f"{sentence} ({difference.mean:+.1f}{unit}, {level} [{difference.low:+.1f}, {difference.high:+.1f}], "
            f"{difference.n} paired seeds)")


def auroc(scores, positives) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties count ½).

    For noise detection pass a "noisiness" score (e.g. minus the cleanliness weight) and the
    noisy mask. It equals (MNR - (k + 1) / 2) / (n - k) for the mean rank MNR of the k
    positives when ranking from the least to the most noisy-looking.
    """
    scores, positives = np.asarray(scores, dtype=float), np.asarray(positives, dtype=bool)
    k, n = int(positives.sum()), len(positives)
    if k == 0 or k == n:
        return float("nan")
    ranks = stats.rankdata(scores)  # ascending, ties share their average rank
    return float((ranks[positives].sum() - k * (k + 1) / 2) / (k * (n - k)))


def fewest_errors_threshold(similarity, is_noisy) -> float:
    """The similarity threshold that misclassifies fewest pairs (clean below it, noisy at or above
    it): an oracle, since it reads the clean labels. OSA's ``threshold="oracle"`` uses it as beta,
    EchoSelect's :func:`lnlkit.echoselect.oracle_tau` as tau."""
    similarity, is_noisy = np.asarray(similarity, float), np.asarray(is_noisy, bool)
    order = np.argsort(similarity, kind="stable")
    noisy = is_noisy[order]
    clean_below = np.cumsum(~noisy) - ~noisy
    noisy_at_or_above = noisy.sum() - np.cumsum(noisy) + noisy
    return float(similarity[order][int(np.argmin(clean_below + noisy_at_or_above))])
