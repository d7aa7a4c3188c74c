"""Label-noise models: symmetric, pair-flip, instance-dependent (Xia et al., 2020) and human (CIFAR-N).

Each generator returns :class:`NoisyLabels`, which keeps what a chapter needs to study the
noise: the achieved rate, the empirical transition matrix, and for instance-dependent noise
two per-instance rows:

- the *realised* row p_i = q_i softmax(a(x_i)) + (1 - q_i) e_{y_i}, the distribution the noisy
  label was actually drawn from. It contains the flip rate q_i, which Xia et al. draw
  independently of the image, so no estimator can recover p_i from x_i.
- the *estimable* row T(x_i)_{y_i} = (1 - eps_bar) e_{y_i} + eps_bar softmax(a(x_i)), eps_bar
  the mean flip rate: everything about the row that depends on the image. This is the "true
  T(x)" an estimator of instance-dependent transitions can hope to find.

:func:`lnlkit.transition.transition_error` measures an estimate against either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("symmetric", "pairflip", "idn", "human")
IDN_FLIP_RATE_SD = 0.1  # sigma of the truncated normal of per-instance flip rates (Xia et al.)


@dataclass
class NoisyLabels:
    noisy: np.ndarray
    clean: np.ndarray
    num_classes: int
    kind: str
    rate: float | None  # nominal rate asked for (None for human labels)
    seed: int | None
    transition: np.ndarray | None = None  # class-level T that generated the labels (symmetric, pair-flip)
    realised_rows: np.ndarray | None = None  # (N, C) rows p_i each label was drawn from (IDN)
    flip_rates: np.ndarray | None = None  # (N,) per-instance flip rates q_i (IDN), independent of x
    flip_directions: np.ndarray | None = None  # (N, C) softmax(a(x_i)) with a_{i, y_i} = -inf (IDN)
    idn_projection: np.ndarray | None = None  # (C, D, C) W of Xia et al.: T(x) for any x and clean class
    info: dict = field(default_factory=dict)

    @property
    def mean_flip_rate(self) -> float:
        """eps_bar: the mean of the drawn flip rates q_i (IDN)."""
        return float(self.flip_rates.mean())

    @property
    def estimable_rows(self) -> np.ndarray | None:
        """(N, C) rows T(x_i)_{y_i} = (1 - eps_bar) e_{y_i} + eps_bar softmax(a(x_i)).

        The part of the realised row p_i that the image x_i determines (IDN; None otherwise).
        """
        if self.flip_directions is None:
            return None
        rows = self.mean_flip_rate * self.flip_directions
        rows[np.arange(len(self.clean)), self.clean] += 1.0 - self.mean_flip_rate
        return rows

    def estimable_transition(self, flat_inputs: np.ndarray) -> np.ndarray:
        """The whole estimable matrix T(x) (N, C, C) for inputs flattened as the noise saw them
        (``LabelledData.flat_pixels_chw``): row c is where a sample of clean class c would go."""
        if self.idn_projection is None:
            raise ValueError(f"{self.kind} noise has no instance-dependent transition")
        x = _idn_inputs(flat_inputs, np.zeros(len(flat_inputs), np.int64), self.info["input_scale"]).astype(np.float32)
        eps, C = self.mean_flip_rate, self.num_classes
        logits = np.einsum("nd,cdk->nck", x, self.idn_projection)  # (N, C clean, C noisy)
        logits[:, np.arange(C), np.arange(C)] = -np.inf
        soft = np.exp(logits - logits.max(2, keepdims=True))
        soft /= soft.sum(2, keepdims=True)
        return eps * soft + (1.0 - eps) * np.eye(C)[None]

    @property
    def achieved_rate(self) -> float:
        """Fraction of labels that differ from the clean label."""
        return float(np.mean(self.noisy != self.clean))

    @property
    def is_flipped(self) -> np.ndarray:
        return self.noisy != self.clean

    def empirical_transition(self) -> np.ndarray:
        """Row-normalised counts: entry [i, j] estimates P(noisy = j | clean = i)."""
        return empirical_transition(self.clean, self.noisy, self.num_classes)

    def summary(self) -> dict:
        return {"kind": self.kind, "rate": self.rate, "seed": self.seed, "achieved_rate": self.achieved_rate,
                "num_classes": self.num_classes, **self.info}

    def save(self, path: str | Path) -> None:
        """Write ``noisy_labels``, ``clean_labels``, ``achieved_rate`` (and IDN rows) to an .npz file, atomically."""
        from .files import atomic_write

        extra = {}
        if self.realised_rows is not None:
            extra = {"realised_rows": self.realised_rows, "estimable_rows": self.estimable_rows,
                     "flip_rates": self.flip_rates}
        with atomic_write(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, noisy_labels=self.noisy, clean_labels=self.clean,
                                achieved_rate=np.float64(self.achieved_rate), kind=self.kind,
                                rate=np.float64(np.nan if self.rate is None else self.rate),
                                seed=np.int64(-1 if self.seed is None else self.seed), **extra)


def empirical_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (clean, noisy), 1)
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


# ---------------------------------------------------------------- validation


def _check_labels(labels, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], found values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


MAX_SEED = 2**32 - 1  # NumPy's legacy seeding (Xia et al.'s IDN) takes seeds up to here


def check_seed(seed, what: str = "seed") -> int:
    """A seed usable by NumPy and torch: an integer in [0, 2**32 - 1]; otherwise a ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"the {what} must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return int(seed)


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not (0.0 <= rate < 1.0):
        raise ValueError(f"noise rate must lie in [0, 1), got {rate}")
    return float(rate)


# ---------------------------------------------------------------- class-conditional noise


def symmetric_transition(num_classes: int, rate: float) -> np.ndarray:
    """T[i, i] = 1 - rate, T[i, j] = rate / (C - 1): flips go only to other classes."""
    rate = _check_rate(rate)
    if rate >= (num_classes - 1) / num_classes:
        raise ValueError(f"symmetric noise at rate {rate} with {num_classes} classes makes the true class no more "
                         f"likely than another; use a rate below {(num_classes - 1) / num_classes:.3f}")
    T = np.full((num_classes, num_classes), rate / (num_classes - 1))
    np.fill_diagonal(T, 1.0 - rate)
    return T


def pairflip_transition(num_classes: int, rate: float) -> np.ndarray:
    """T[i, i] = 1 - rate, T[i, (i + 1) mod C] = rate."""
    rate = _check_rate(rate)
    if rate >= 0.5:
        raise ValueError(f"pair-flip noise at rate {rate} is ambiguous: class i+1 becomes at least as likely as "
                         f"the true class i; use a rate below 0.5")
    T = np.eye(num_classes) * (1.0 - rate)
    T[np.arange(num_classes), (np.arange(num_classes) + 1) % num_classes] = rate
    return T


def sample_rows(probabilities: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Draw one class per row by inverse CDF: the index found by ``searchsorted(cdf, u, side='right')``.

    This is what ``np.random.choice(C, p=row)`` does with one uniform per call, vectorised.
    """
    cdf = np.cumsum(probabilities.astype(np.float64), axis=1)
    cdf /= cdf[:, -1:]
    return np.minimum((cdf <= uniforms[:, None]).sum(1), probabilities.shape[1] - 1)


def class_conditional_noise(labels, transition: np.ndarray, seed: int, kind: str = "custom",
                            rate: float | None = None) -> NoisyLabels:
    """Sample each noisy label from the row of ``transition`` of its clean label."""
    num_classes = transition.shape[0]
    labels = _check_labels(labels, num_classes)
    rng = np.random.default_rng(seed)
    noisy = sample_rows(transition[labels], rng.random(len(labels)))
    return NoisyLabels(noisy, labels, num_classes, kind, rate, seed, transition=transition)


def symmetric_noise(labels, num_classes: int, rate: float, seed: int) -> NoisyLabels:
    return class_conditional_noise(labels, symmetric_transition(num_classes, rate), seed, "symmetric", rate)


def pairflip_noise(labels, num_classes: int, rate: float, seed: int) -> NoisyLabels:
    return class_conditional_noise(labels, pairflip_transition(num_classes, rate), seed, "pairflip", rate)


# ---------------------------------------------------------------- instance-dependent noise (Xia et al., 2020)


def _idn_inputs(inputs: np.ndarray, labels: np.ndarray, input_scale: str) -> np.ndarray:
    inputs = np.asarray(inputs)
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    if input_scale not in ("uint8", "unit"):
        raise ValueError(f"input_scale must be 'uint8' (Xia et al.) or 'unit' (EchoAlign's code), got {input_scale!r}")
    flat = inputs.reshape(len(inputs), -1)
    return flat if input_scale == "uint8" else flat / 255.0


def _idn_flip_rates(rate: float, n: int, sd: float) -> np.ndarray:
    from scipy import stats

    if rate == 0.0:  # the truncated normal at mean 0 still flips ~8 %: "rate 0" means no noise
        return np.zeros(n)
    # random_state=None draws from NumPy's global RNG, as the reference code does.
    return stats.truncnorm((0 - rate) / sd, (1 - rate) / sd, loc=rate, scale=sd).rvs(n)


def instance_dependent_noise(inputs, labels, num_classes: int, rate: float, seed: int,
                             flip_rate_sd: float = IDN_FLIP_RATE_SD, input_scale: str = "uint8") -> NoisyLabels:
    """Instance-dependent noise of Xia et al. (NeurIPS 2020), vectorised, same RNG order as the reference.

    Parameters
    ----------
    inputs : array (N, ...)
        Per-sample inputs; images must be in CHW order, uint8 values (see
        :meth:`lnlkit.data.LabelledData.flat_pixels_chw`).
    input_scale : {"uint8", "unit"}
        "uint8": x as float 0-255 (Xia et al.'s code, the default). "unit": x / 255
        (EchoAlign's code), which changes some of the labels for the same seed.

    The steps (each one a line below): seed NumPy's global RNG; q_i ~ truncated normal
    (rate, sd) on [0, 1]; W ~ N(0, 1) of shape (C, D, C); a_i = x_i W[y_i] with
    a_i[y_i] = -inf; p_i = q_i softmax(a_i) + (1 - q_i) e_{y_i}; y~_i ~ Categorical(p_i)
    in order i = 1..N.
    """
    labels = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    x = _idn_inputs(inputs, labels, input_scale)
    n = len(labels)

    np.random.seed(seed)
    flip_rates = _idn_flip_rates(rate, n, flip_rate_sd)
    W = np.random.randn(num_classes, x.shape[1], num_classes).astype(np.float32)  # float32 as the reference

    logits = np.empty((n, num_classes), np.float32)
    for c in range(num_classes):  # one matrix product per true class, not per sample
        members = labels == c
        logits[members] = x[members].astype(np.float32) @ W[c]
    rows = np.arange(n)
    logits[rows, labels] = -np.inf
    logits -= logits.max(1, keepdims=True)
    soft = np.exp(logits)
    soft /= soft.sum(1, keepdims=True)
    p = (flip_rates[:, None] * soft).astype(np.float32)
    p[rows, labels] += (1 - flip_rates).astype(np.float32)

    noisy = sample_rows(p, np.random.random_sample(n))  # one uniform per sample, in order
    return NoisyLabels(noisy, labels, num_classes, "idn", rate, seed, realised_rows=p.astype(np.float64),
                       flip_rates=flip_rates, flip_directions=soft.astype(np.float64), idn_projection=W,
                       info={"flip_rate_sd": flip_rate_sd, "input_scale": input_scale})


def instance_dependent_noise_loop(inputs, labels, num_classes: int, rate: float, seed: int,
                                  flip_rate_sd: float = IDN_FLIP_RATE_SD, input_scale: str = "uint8") -> np.ndarray:
    """The straightforward per-sample loop of the reference code (for tests and the benchmark only)."""
    labels = _check_labels(labels, num_classes)
    x = _idn_inputs(inputs, labels, input_scale)
    np.random.seed(seed)
    flip_rates = _idn_flip_rates(_check_rate(rate), len(labels), flip_rate_sd)
    W = np.random.randn(num_classes, x.shape[1], num_classes).astype(np.float32)
    rows = []
    for i in range(len(labels)):
        a = x[i].astype(np.float32) @ W[labels[i]]
        a[labels[i]] = -np.inf
        a = np.exp(a - a.max())
        row = (flip_rates[i] * a / a.sum()).astype(np.float32)
        row[labels[i]] += np.float32(1 - flip_rates[i])
        rows.append(row)
    return np.array([np.random.choice(num_classes, p=row) for row in rows])


# ---------------------------------------------------------------- human noise and dispatch


def human_noise(label_set: str, clean_labels=None, download: bool = True) -> NoisyLabels:
    """CIFAR-10N / CIFAR-100N human labels; checks they line up with ``clean_labels`` when given."""
    from .data import load_cifar_n

    table = load_cifar_n(label_set, download=download)
    clean = table["clean"]
    if clean_labels is not None:
        clean_labels = np.asarray(clean_labels)
        if len(clean_labels) != len(clean) or np.any(clean_labels != clean):
            raise ValueError(f"the CIFAR-N label set {label_set!r} does not line up with the given clean labels "
                             f"({len(clean)} vs {len(clean_labels)} labels); it needs the canonical train order")
    num_classes = int(clean.max()) + 1
    return NoisyLabels(table["noisy"], clean, num_classes, "human", None, None,
                       info={"label_set": label_set, "file": table["file"]})


def check_noise_arguments(kind: str, rate, seed, label_set) -> None:
    """Refuse a combination that would be ignored or fail later (e.g. a rate with human labels), before any work."""
    if kind not in KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose from {KINDS}")
    if kind == "human":
        if label_set is None:
            raise ValueError("human noise needs a label set (--label-set), e.g. worst")
        if rate is not None:
            raise ValueError(f"human noise takes no rate (--rate): its rate is that of the label set {label_set!r}; "
                             "leave --rate out")
        return
    if label_set is not None:
        raise ValueError(f"a label set (--label-set {label_set}) goes with human noise only, not {kind}")
    if rate is None:
        raise ValueError(f"{kind} noise needs a rate in [0, 1) (--rate)")
    _check_rate(rate)
    check_seed(seed, "noise seed (--noise-seed; --seed for the noise command)")


def make_noise(kind: str, data, rate: float | None = None, seed: int = 1, label_set: str | None = None,
               **options) -> NoisyLabels:
    """Noisy labels of kind ``kind`` for a :class:`lnlkit.data.LabelledData` training split."""
    check_noise_arguments(kind, rate, seed, label_set)
    if kind == "human":
        return human_noise(label_set, data.labels)
    if kind == "symmetric":
        return symmetric_noise(data.labels, data.num_classes, rate, seed)
    if kind == "pairflip":
        return pairflip_noise(data.labels, data.num_classes, rate, seed)
    return instance_dependent_noise(data.flat_pixels_chw(), data.labels, data.num_classes, rate, seed, **options)
