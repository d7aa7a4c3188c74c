"""High-dimensional geometry behind OSA (its Appendix C), as functions the theory chapter checks.

- The cosine of two independent isotropic random vectors in R^d (e.g. standard Gaussian) has
  an exact law: (1 + cos) / 2 ~ Beta((d - 1) / 2, (d - 1) / 2). Appendix C.1 approximates it
  by N(0, 1/d).
- Random layers f(x) = act(W x + b) with W_kl ~ N(0, 1/d_out) and b_k ~ N(0, 1/d_out), the
  initialisation of Lemma 1 and Theorems 1 and 2.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats


def cosine_law(d: int) -> stats.rv_continuous:
    """The exact distribution of cos(u, v) for independent isotropic u, v in R^d (d >= 2)."""
    half = (d - 1) / 2
    return stats.beta(half, half, loc=-1, scale=2)


def prob_within_exact(a: float, d: int) -> float:
    """P(|cos(u, v)| <= a) under the exact law."""
    law = cosine_law(d)
    return float(law.cdf(a) - law.cdf(-a))


def prob_within_normal(a: float, d: int) -> float:
    """Appendix C.1, Eq. 7: Phi(a sqrt(d)) - Phi(-a sqrt(d))."""
    return float(stats.norm.cdf(a * np.sqrt(d)) - stats.norm.cdf(-a * np.sqrt(d)))


def random_pair_cosines(d: int, n_pairs: int, seed: int = 0, kind: str = "gaussian", chunk: int = 8192) -> np.ndarray:
    """Monte Carlo: cosines of ``n_pairs`` independent pairs of random vectors in R^d.

    ``kind``: ``gaussian`` (isotropic) or ``uniform`` (entries U[0, 1), like random pixels).
    """
    gen = torch.Generator().manual_seed(seed)
    draw = {"gaussian": torch.randn, "uniform": torch.rand}[kind]
    out = []
    for start in range(0, n_pairs, chunk):
        m = min(chunk, n_pairs - start)
        u, v = draw((m, d), generator=gen), draw((m, d), generator=gen)
        out.append(torch.nn.functional.cosine_similarity(u, v, dim=1))
    return torch.cat(out).numpy().astype(np.float64)


def pairs_with_cosine(n: int, d: int, cosine: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs (u, v) of standard-Gaussian-sized vectors in R^d with cos(u, v) = ``cosine`` exactly."""
    u = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = w - (w * u).sum(1, keepdim=True) / (u * u).sum(1, keepdim=True) * u  # orthogonal to u
    u_hat, w_hat = u / u.norm(dim=1, keepdim=True), w / w.norm(dim=1, keepdim=True)
    v = (cosine * u_hat + np.sqrt(1 - cosine ** 2) * w_hat) * u.norm(dim=1, keepdim=True)
    return u, v


ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda x: x,
               "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.1)}


class RandomNetwork:
    """A t-layer network with Lemma 1's initialisation: W ~ N(0, 1/d_out), b ~ N(0, 1/d_out).

    ``layers(x)`` returns the output of every layer; the last layer is linear when
    ``linear_last`` (Theorem 2's projection into the common space).
    """

    def __init__(self, d_in: int, width: int, depth: int, activation: str = "relu", bias: bool = True,
                 linear_last: bool = False, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        dims = [d_in] + [width] * depth
        scale = [1 / np.sqrt(d_out) for d_out in dims[1:]]
        self.weights = [torch.randn(o, i, generator=gen, dtype=torch.float64) * s
                        for i, o, s in zip(dims[:-1], dims[1:], scale)]
        self.biases = [torch.randn(o, generator=gen, dtype=torch.float64) * s * bias
                       for o, s in zip(dims[1:], scale)]
        self.activation, self.linear_last = ACTIVATIONS[activation], linear_last

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, h = [], x.double()
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if not (self.linear_last and i == len(self.weights) - 1):
                h = self.activation(h)
            outs.append(h)
        return outs


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(u, v, dim=-1)


def cone_prediction(mean_a, cov_a, mean_b=None, cov_b=None) -> dict:
    """Where the cosine of two independent anisotropic random vectors concentrates.

    For a ~ (mu_a, Sigma_a) and b ~ (mu_b, Sigma_b) independent, E[a.b] = mu_a.mu_b,
    E|a|^2 = |mu_a|^2 + tr Sigma_a and Var(a.b) = tr(Sigma_a Sigma_b) + mu_a' Sigma_b mu_a +
    mu_b' Sigma_a mu_b. When the norms concentrate (many effective dimensions), the cosine is
    about a.b / sqrt(E|a|^2 E|b|^2), so

        beta ~ mu_a.mu_b / sqrt((|mu_a|^2 + tr Sigma_a)(|mu_b|^2 + tr Sigma_b)),

    which for one distribution is |mu|^2 / (|mu|^2 + tr Sigma), with a spread of about
    sqrt(Var(a.b)) over the same denominator: 1 / sqrt(d_eff) for mu = 0, where
    d_eff = tr(Sigma)^2 / tr(Sigma^2) is the effective dimension (d for isotropic vectors).
    ``mean_b``/``cov_b`` default to ``a``'s (two draws from one distribution).
    """
    mean_a, cov_a = np.asarray(mean_a, float), np.asarray(cov_a, float)
    mean_b = mean_a if mean_b is None else np.asarray(mean_b, float)
    cov_b = cov_a if cov_b is None else np.asarray(cov_b, float)
    scale = np.sqrt((mean_a @ mean_a + np.trace(cov_a)) * (mean_b @ mean_b + np.trace(cov_b)))
    variance = np.trace(cov_a @ cov_b) + mean_a @ cov_b @ mean_a + mean_b @ cov_a @ mean_b
    return {"beta": float(mean_a @ mean_b / scale), "sd": float(np.sqrt(variance) / scale),
            "effective_dimension": float(np.trace(cov_a) ** 2 / np.trace(cov_a @ cov_a))}
