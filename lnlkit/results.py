"""Result files with provenance, the papers' numbers, and the table that puts them side by side."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path | None:
    """The checkout that holds this package, if it is one (has a pyproject.toml)."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() else None


def results_dir() -> Path:
    """``$LNLKIT_RESULTS``, else ``results/`` of the checkout, else ``./results``."""
    if os.environ.get("LNLKIT_RESULTS"):
        return Path(os.environ["LNLKIT_RESULTS"])
    root = project_root()
    return (root if root else Path.cwd()) / "results"


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


def provenance() -> dict:
    import numpy
    import torch

    from . import __version__

    return {"lnlkit_version": __version__, "git_commit": git_commit(), "torch_version": torch.__version__,
            "numpy_version": numpy.__version__, "python_version": platform.python_version(),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_result(record: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float))
    tmp.replace(path)
    return path


def load_results(directory: str | Path | None = None, **where) -> list[dict]:
    """All result files in ``directory`` whose config matches ``where`` (e.g. profile="quick")."""
    directory = Path(directory) if directory else results_dir()
    records = []
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        if all(record.get("run", {}).get(k) == v for k, v in where.items()):
            records.append(record | {"file": path.name})
    return records


def results_frame(records: list[dict]) -> pd.DataFrame:
    """One row per result file: what was run, the headline metrics, and where it came from."""
    rows = []
    for r in records:
        run, final = r["run"], r["final"]
        rows.append({"dataset": run["dataset"], "noise": noise_label(run), "method": run["method"],
                     "profile": run["profile"], "seed": run["seed"], "epochs": r["train_config"]["epochs"],
                     "model": r["train_config"]["model"],
                     "last10_mean": 100 * final["test_acc_last10_mean"], "best": 100 * final["test_acc_best"],
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
                         "dataset": source["dataset"], "model": source["model"], **entry})
    return pd.DataFrame(rows)


def paper_numbers(**where) -> pd.DataFrame:
    """The papers' reported accuracies (percent) with paper, table, row (method) and column (noise)."""
    table = _paper_table()
    for key, value in where.items():
        table = table[table[key].isin(value if isinstance(value, (list, tuple)) else [value])]
    return table.reset_index(drop=True)


def compare_with_papers(ours: pd.DataFrame, dataset: str, metric: str = "last10_mean") -> pd.DataFrame:
    """Our mean (± sd over seeds) beside each paper's number for the same method and noise."""
    if ours.empty:
        return pd.DataFrame()
    ours = ours[ours["dataset"] == dataset]
    grouped = ours.groupby(["noise", "method", "profile", "epochs", "model", "data_source"])[metric]
    summary = grouped.agg(["mean", "std", "count"]).reset_index()
    rows = []
    for _, r in summary.iterrows():
        papers = paper_numbers(dataset=dataset, method=r["method"], noise=r["noise"])
        cited = "; ".join(f"{p.value:.2f}±{p.sd:.2f} ({p.paper} {p.table}, {p.metric})" for p in papers.itertuples())
        rows.append({"noise": r["noise"], "method": r["method"], "profile": r["profile"],
                     f"ours ({metric})": f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["count"] > 1 else ""),
                     "seeds": int(r["count"]), "papers": cited or "—",
                     "our setting": f"{r['model']}, {r['epochs']} epochs, {r['data_source']}"})
    return pd.DataFrame(rows)
