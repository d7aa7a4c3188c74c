"""lnlkit: learning from noisy labels — the library behind the book."""

__version__ = "0.1.0"
