"""One experiment from the command line or a chapter: data -> noise -> method -> trainer -> result file."""

from __future__ import annotations

from pathlib import Path

from .data import hold_out, load_dataset
from .methods import build_method
from .noise import make_noise
from .profiles import train_config
from .results import provenance, results_dir, write_result
from .trainer import Trainer


def run_name(method: str, dataset: str, noise: str, rate: float | None, seed: int, profile: str,
             label_set: str | None = None, held_out: float = 0.0) -> str:
    setting = label_set if noise == "human" else f"{noise}{round(100 * rate)}"
    if held_out:
        setting += f"-heldout{round(100 * held_out)}"
    return f"{dataset}-{setting}-{method}-{profile}-seed{seed}"


def run_experiment(method: str, dataset: str, noise: str, rate: float | None = None, seed: int = 1,
                   profile: str = "smoke", label_set: str | None = None, method_options: dict | None = None,
                   config_overrides: dict | None = None, out_dir: str | Path | None = None, save: bool = True,
                   checkpoint_dir: str | Path | None = None, progress: bool = True, return_trainer: bool = False,
                   held_out: float = 0.0):
    """Train ``method`` on ``dataset`` with ``noise`` labels; return (and by default save) the result record.

    With ``return_trainer`` the trained :class:`Trainer` comes back too, as ``(record, trainer)``,
    for looking inside the trained networks.

    ``held_out`` > 0 keeps that fraction of the training set aside, clean, as proxy external
    knowledge (OSA's ``estimator="proxy"`` trains on it); no method trains on it, so runs that
    compare methods should all use the same value.

    A checkpoint is written every epoch under ``checkpoint_dir`` (default ``checkpoints/`` beside
    the results folder); running the same command again resumes from it.
    """
    splits = load_dataset(dataset)
    train, reference = hold_out(splits.train, held_out) if held_out else (splits.train, None)
    noisy = make_noise(noise, train, rate=rate, seed=seed, label_set=label_set)
    config = train_config(profile, dataset, method, seed=seed, progress=progress, **(config_overrides or {}))
    # Co-teaching's forget rate: the nominal rate, or for human labels the measured one (as is usual).
    forget = rate if rate is not None else noisy.achieved_rate
    context = {"class_names": train.classes, "reference": reference}
    algorithm = build_method(method, noise_rate=forget, context=context, **(method_options or {}))

    name = run_name(method, dataset, noise, rate, seed, profile, label_set, held_out)
    out_dir = Path(out_dir) if out_dir else results_dir()
    checkpoint = None
    if save:
        checkpoint = Path(checkpoint_dir or out_dir.parent / "checkpoints") / f"{name}.pt"

    trainer = Trainer(algorithm, train, noisy.noisy, splits.test, config, checkpoint_path=checkpoint)
    result = trainer.fit()
    record = {
        "run": {"method": method, "dataset": dataset, "noise": noise, "rate": rate, "label_set": label_set,
                "seed": seed, "profile": profile, "held_out": held_out},
        "method_options": algorithm.options(),
        "train_config": result.config,
        "noise": noisy.summary(),
        "data_source": splits.train.source,
        "n_held_out": len(reference) if reference is not None else 0,
        "n_train": len(trainer.train), "n_val": len(trainer.val) if trainer.val is not None else 0,
        "n_test": len(splits.test),
        "final": result.final,
        "history": result.history,
        "wall_time_s": result.wall_time_s,
        "device": result.device,
        "provenance": provenance(),
    }
    if save:
        write_result(record, out_dir / f"{name}.json")
        checkpoint.unlink(missing_ok=True)  # the result file now holds everything the checkpoint did
    return (record, trainer) if return_trainer else record
