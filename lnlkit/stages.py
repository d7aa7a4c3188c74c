"""Stages: the steps a method runs before training, each built once and cached.

DTM and EchoAlign are pipelines (features -> clusters -> matrices -> diffusion; edit ->
select), and OSA trains a proxy estimator and scores every pair before its first epoch. Each
such step is a *stage*: a function that returns an *artefact*, a dict of tensors, NumPy
arrays, state dicts, numbers and strings. :meth:`StageCache.run` keys the artefact by
everything it depends on (the stage's configuration, digests of the data and noisy labels it
reads, lnlkit's version and a digest of its code), loads it when that key was built before,
and otherwise builds it and writes it atomically. A resumed or repeated run therefore loads
its stages instead of rebuilding them, and every stage leaves a record (name, key, built or
loaded, seconds to build) that goes into the result file.

Artefacts are stored with ``torch.save`` and read back with ``torch.load(weights_only=True)``,
which builds tensors and plain containers only: a cache file cannot run code. NumPy arrays
are stored as tensors and come back as tensors.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .files import atomic_write, cache_dir, code_digest, digest


@dataclass
class StageRecord:
    name: str
    key: str
    status: str  # "built", "loaded" or "built, not cached"
    build_s: float  # seconds the build took, without stages it ran itself (when loaded: when it was built)
    file: str | None


def _portable(value):
    """Tensors to CPU, arrays to tensors, containers recursively: what weights_only loading accepts."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_portable(v) for v in value)
    return value


class StageCache:
    """Builds or loads the stages of one run and remembers what it did.

    Parameters
    ----------
    folder : path or None
        Where artefacts live; default ``<cache>/stages``.
    enabled : bool
        With False every stage is built and nothing is written (tests, throw-away runs).
    """

    def __init__(self, folder: str | Path | None = None, enabled: bool = True):
        self.enabled = enabled
        self.folder = Path(folder) if folder else (cache_dir() / "stages" if enabled else None)
        self.records: list[StageRecord] = []
        self._nested_s = 0.0  # build time of stages run inside the current build (not counted twice)

    @staticmethod
    def key(name: str, depends_on: dict) -> str:
        from . import __version__

        return digest({"stage": name, "depends_on": depends_on, "lnlkit": __version__, "code": code_digest()})

    def run(self, name: str, depends_on: dict, build: Callable[[], dict]) -> dict:
        """The artefact of stage ``name``: loaded when built before with the same ``depends_on``, else built.

        ``depends_on`` must name everything the artefact depends on (configuration values and
        digests of data); it is part of the key, so two stages with the same name and inputs
        share one artefact.
        """
        key = self.key(name, depends_on)
        path = self.folder / f"{name}-{key}.pt" if self.enabled else None
        if path is not None and path.exists():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                self.records.append(StageRecord(name, key, "loaded", stored["build_s"], str(path)))
                return stored["artefact"]
            except Exception:  # a torn or foreign file: discard it and build again
                path.unlink(missing_ok=True)
        outer, self._nested_s = self._nested_s, 0.0
        tic = time.perf_counter()
        try:
            artefact = _portable(build())
        finally:
            total = time.perf_counter() - tic
            seconds, self._nested_s = total - self._nested_s, outer + total
        if not isinstance(artefact, dict):
            raise TypeError(f"stage {name!r} must return a dict, got {type(artefact).__name__}")
        if path is not None:
            with atomic_write(path) as tmp:
                torch.save({"name": name, "depends_on": _portable(depends_on), "build_s": seconds,
                            "artefact": artefact}, tmp)
        self.records.append(StageRecord(name, key, "built" if path else "built, not cached", seconds,
                                        str(path) if path else None))
        return artefact

    def summary(self) -> list[dict]:
        """The stage records, for the result file."""
        return [asdict(r) for r in self.records]


def recorded_artefact(record: dict, name: str, folder: str | Path | None = None) -> dict:
    """The artefact of stage ``name`` that the run of ``record`` (a result file's content) built or
    loaded, read from the stage cache by the key in the record.

    The key is the recorded one, not recomputed, so this works whatever lnlkit version reads it
    (a later edit of the code changes the keys of new runs, not what a finished run stored).
    """
    entry = next((s for s in record.get("stages", []) if s["name"] == name), None)
    if entry is None:
        stages = [s["name"] for s in record.get("stages", [])]
        raise ValueError(f"the run recorded no stage {name!r} (its stages: {stages})")
    path = Path(folder or cache_dir() / "stages") / f"{name}-{entry['key']}.pt"
    if not path.exists():
        raise FileNotFoundError(f"stage {name!r} of this run is not in the cache ({path}): run the run's "
                                "command again with the same LNLKIT_CACHE to rebuild it")
    return torch.load(path, map_location="cpu", weights_only=True)["artefact"]
