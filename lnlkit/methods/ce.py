"""Cross-entropy on the noisy labels: the baseline every paper reports."""

from .base import Method


class CrossEntropy(Method):
    name = "ce"
    num_networks = 1
