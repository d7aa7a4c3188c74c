"""lnlkit: learning from noisy labels — the library behind the book."""

from lnlkit.memory import keep_freed_memory

__version__ = "0.1.0"

keep_freed_memory()
