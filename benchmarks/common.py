"""Shared helpers of the benchmark scripts: data with a fallback, and result files."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lnlkit.data import DataUnavailableError, LabelledData, load_cifar  # noqa: E402
from lnlkit.memory import keep_freed_memory  # noqa: E402
from lnlkit.results import provenance  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def cifar10_train() -> LabelledData:
    """CIFAR-10 train split; random images of the same shape when it is not available (said in the output)."""
    try:
        return load_cifar("cifar10", download=False).train
    except DataUnavailableError:
        rng = np.random.default_rng(0)
        print("CIFAR-10 not found: benchmarking on random uint8 images of the same shape")
        return LabelledData(rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8), np.arange(50_000) % 10,
                            [str(i) for i in range(10)], "random", "random uint8 images")


def save(name: str, record: dict) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}-{record['device_kind']}.json"
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        allocator = "jemalloc"
    else:
        allocator = "glibc, kept freed memory (lnlkit)" if keep_freed_memory() else "glibc as it comes"
    record |= {"machine": platform.machine(), "allocator": allocator, "provenance": provenance()}
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path.relative_to(OUT.parent.parent)}")
    return path
