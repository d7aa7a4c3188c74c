"""Result files with provenance, the papers' numbers, and the table that puts them side by side."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from .files import PACKAGE_DIR, write_text_atomic


def project_root() -> Path | None:
    """The checkout that holds this package, if it is one (has a pyproject.toml)."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() else None


def results_dir() -> Path:
    """``$LNLKIT_RESULTS``, else ``results/`` in the working directory (never beside an installed package).

    The book sets ``LNLKIT_RESULTS`` to the checkout's ``results/`` when it executes chapters.
    """
    if os.environ.get("LNLKIT_RESULTS"):
        return Path(os.environ["LNLKIT_RESULTS"])
    return Path.cwd() / "results"


def git_commit() -> str:
    root = project_root()
    if root is None:
        return "unknown (not a git checkout)"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit or "unknown") + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def cpu_fingerprint() -> str:
    """The CPU a run was made on: model name, the instruction set PyTorch uses, and a hash of the CPU's
    feature flags and cache sizes. oneDNN picks its kernels (and so the order of floating-point sums)
    by these, so a CPU run is bitwise reproducible only where the fingerprint matches."""
    import torch

    model, details = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        field = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in info if ":" in line}
        model = field.get("model name", model)
        details = field.get("flags", "") + field.get("cache size", "")
    except OSError:
        pass
    digest = hashlib.sha1(details.encode()).hexdigest()[:8]
    return f"{model} | {torch.backends.cpu.get_cpu_capability()} | {digest}"


def provenance() -> dict:
    import numpy
    import torch

    from . import __version__

    return {"lnlkit_version": __version__, "git_commit": git_commit(), "torch_version": str(torch.__version__),
            "numpy_version": numpy.__version__, "python_version": platform.python_version(),
            "cpu": cpu_fingerprint(),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_result(record: dict, path: str | Path) -> Path:
    """Write a result file atomically (a unique temporary file, then a rename): never torn, never mixed."""
    return write_text_atomic(path, json.dumps(record, indent=1, default=float))


REQUIRED_FIELDS = ("run", "method_options", "train_config", "noise", "data_source", "stages", "final", "history",
                   "wall_time_s", "device", "provenance")


def check_record(record: dict) -> None:
    """Raise ValueError unless ``record`` has what every result file must hold (the protocol of every table)."""
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"result record lacks {missing}")
    run, final, history = record["run"], record["final"], record["history"]
    for key in ("noise_seed", "seed", "method", "dataset", "noise", "profile"):
        if key not in run:
            raise ValueError(f"result record's run lacks {key!r}")
    if len(history) != record["train_config"]["epochs"]:
        raise ValueError(f"{len(history)} epochs recorded, {record['train_config']['epochs']} configured")
    if "test_acc_last10_mean" not in final or any(k.endswith("best") and "oracle" not in k for k in final):
        raise ValueError(f"final metrics must give the last-10 mean and label any best epoch an oracle: {list(final)}")
    if record["train_config"]["val_fraction"] > 0 and "test_acc_at_min_val_loss" not in final:
        raise ValueError("a run with a validation split must report accuracy at minimum validation loss")
    if any(not 0.0 <= h["test_acc"] <= 1.0 for h in history):
        raise ValueError("test accuracy outside [0, 1]")
    for stage in record["stages"]:
        if stage["status"] not in ("built", "loaded", "built, not cached"):
            raise ValueError(f"stage {stage['name']} has status {stage['status']!r}")
    json.dumps(record, allow_nan=True)  # plain JSON values only


def load_results(directory: str | Path | None = None, **where) -> list[dict]:
    """All result files in ``directory`` whose config matches ``where`` (e.g. profile="quick")."""
    directory = Path(directory) if directory else results_dir()
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping {path}: not a readable JSON file ({error})", stacklevel=2)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("run"), dict) or "final" not in record:
            warnings.warn(f"skipping {path}: not an lnlkit result file", stacklevel=2)
            continue
        if all(record["run"].get(k) == v for k, v in where.items()):
            records.append(record | {"file": path.name})
    return records


def results_frame(records: list[dict]) -> pd.DataFrame:
    """One row per result file: what was run, the headline metrics, and where it came from."""
    rows = []
    for r in records:
        run, final = r["run"], r["final"]
        rows.append({"dataset": run["dataset"], "noise": noise_label(run), "method": run["method"],
                     "profile": run["profile"], "noise_seed": run.get("noise_seed", run["seed"]),
                     "seed": run["seed"], "epochs": r["train_config"]["epochs"],
                     "model": r["train_config"]["model"],
                     "held_out": run.get("held_out", 0.0),
                     "final": 100 * final["test_acc_final"],
                     "last10_mean": 100 * final["test_acc_last10_mean"],
                     "at_min_val_loss": 100 * final.get("test_acc_at_min_val_loss", float("nan")),
                     "oracle_best": 100 * final["test_acc_oracle_best"],
                     "achieved_noise": r["noise"]["achieved_rate"], "data_source": r["data_source"],
                     "device": r["device"], "wall_time_s": r["wall_time_s"], "file": r.get("file", "")})
    return pd.DataFrame(rows)


def noise_label(run: dict) -> str:
    """'IDN-40%', 'Sym-50%', 'Pair-30%' or 'CIFAR-10N worst'."""
    if run["noise"] == "human":
        return f"CIFAR-N {run['label_set']}"
    prefix = {"idn": "IDN", "symmetric": "Sym", "pairflip": "Pair"}[run["noise"]]
    return f"{prefix}-{round(100 * run['rate'])}%"


# ---------------------------------------------------------------- papers' numbers


@lru_cache(maxsize=1)
def _paper_table() -> pd.DataFrame:
    raw = json.loads(resources.files("lnlkit").joinpath("paper_numbers.json").read_text())
    rows = []
    for source in raw["sources"]:
        for entry in source["entries"]:
            rows.append({"paper": source["paper"], "table": source["table"], "metric": source["metric"],
                         "dataset": source["dataset"], "model": source["model"],
                         "unit": source.get("unit", "%"), **entry})
    return pd.DataFrame(rows)


def paper_numbers(**where) -> pd.DataFrame:
    """The papers' reported accuracies (percent) with paper, table, row (method) and column (noise)."""
    table = _paper_table()
    for key, value in where.items():
        table = table[table[key].isin(value if isinstance(value, (list, tuple)) else [value])]
    return table.reset_index(drop=True)
