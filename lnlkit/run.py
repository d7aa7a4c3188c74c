"""One experiment from the command line or a chapter: data -> noise -> splits -> method -> trainer -> result.

The data flow runs one way:

1. load the data set;
2. draw the noise on the *whole* training set (noise seed), so an image's noisy label never
   depends on which other images are kept;
3. split off a clean held-out part (``held_out``, proxy external knowledge) and a noisy
   validation part (the profile's ``val_fraction``), both with :func:`lnlkit.data.split_indices`
   seeded by the noise seed;
4. build the method from its options; the trainer hands it the facts of the run, it prepares
   its (cached) stages, and training runs with the training seed.

:func:`run_experiment` returns a :class:`RunResult`: the record written to the result file and
the trained model, with a small API for looking inside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .data import LabelledData, hold_out, load_dataset, validation_split
from .files import atomic_write, cache_dir, check_writable, code_digest, digest
from .methods import METHODS, build_method, coerce_options
from .noise import NoisyLabels, check_noise_arguments, check_seed, make_noise
from .profiles import train_config
from .results import provenance, results_dir, write_result
from .stages import StageCache
from .trainer import Trainer, resolve_device


def run_name(*, method: str, dataset: str, noise: str, rate: float | None, label_set: str | None,
             noise_seed: int, seed: int, profile: str, fingerprint: str) -> str:
    """A readable prefix and a digest of everything else: 'digits-idn40-osa-smoke-noise1-seed1-1a2b3c4d'."""
    setting = label_set if noise == "human" else f"{noise}{round(100 * rate)}"
    return f"{dataset}-{setting}-{method}-{profile}-noise{noise_seed}-seed{seed}-{fingerprint[:8]}"


@dataclass
class ExperimentData:
    """The splits of one experiment, after the noise was drawn on the whole training set."""

    train: LabelledData  # noisy labels attached; what the classifiers train on
    test: LabelledData
    noise: NoisyLabels  # drawn on the whole training set, before any split
    val: LabelledData | None = None  # noisy validation split
    reference: LabelledData | None = None  # clean held-out split (proxy external knowledge)


def experiment_data(*, dataset: str, noise: str, rate: float | None = None, label_set: str | None = None,
                    noise_seed: int = 1, held_out: float = 0.0, val_fraction: float = 0.0) -> ExperimentData:
    """Load ``dataset``, draw the noise on its whole training set, then split off held-out and validation parts."""
    splits = load_dataset(dataset)
    noisy = make_noise(noise, splits.train, rate=rate, seed=noise_seed, label_set=label_set)
    train = splits.train.with_noisy_labels(noisy.noisy)
    reference = val = None
    if held_out:
        train, reference = hold_out(train, held_out, seed=noise_seed)
    if val_fraction:
        train, val = validation_split(train, val_fraction, seed=noise_seed)
    return ExperimentData(train, splits.test, noisy, val, reference)


@dataclass
class RunResult:
    """A finished run: its record (what the result file holds) and the trained model."""

    record: dict
    trainer: Trainer
    noise: NoisyLabels  # the noise drawn on the whole training set (before any split)
    path: Path | None = None  # the result file, when saved

    @property
    def final(self) -> dict:
        return self.record["final"]

    @property
    def history(self) -> list[dict]:
        return self.record["history"]

    @property
    def method(self):
        return self.trainer.method

    @property
    def networks(self) -> list[torch.nn.Module]:
        return self.trainer.networks

    @property
    def auxiliary(self) -> torch.nn.ModuleList:
        return self.trainer.auxiliary

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    @property
    def noisy_labels(self) -> np.ndarray:
        """The noisy labels the classifiers trained on (training split, in its order)."""
        return self.trainer.train.noisy_labels.cpu().numpy()

    @property
    def clean_labels(self) -> np.ndarray:
        """The clean labels of the training split (known for measurement only)."""
        return self.trainer.train.clean_labels.cpu().numpy()

    def _raw(self, inputs) -> torch.Tensor:
        """Raw inputs (uint8 N, H, W, C images or float features; NumPy or tensor) on the device, as stored."""
        x = torch.as_tensor(np.asarray(inputs)).to(self.device)
        return x.permute(0, 3, 1, 2) if x.ndim == 4 else x

    def normalise(self, inputs) -> torch.Tensor:
        """Raw inputs -> the networks' input (normalised with the training statistics)."""
        return self.trainer.train.normalise(self._raw(inputs))

    def train_inputs(self) -> torch.Tensor:
        """The training split's inputs, normalised as the networks saw them (un-augmented)."""
        return self.trainer.train.normalise(self.trainer.train.inputs)

    @torch.no_grad()
    def predict_proba(self, inputs=None, network: int = 0, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities of classifier ``network`` for raw ``inputs`` (default: the training split)."""
        raw = self.trainer.train.inputs if inputs is None else self._raw(inputs)
        net, trainer = self.networks[network].eval(), self.trainer
        out = []
        for start in range(0, len(raw), batch_size):
            x = trainer.prepare(trainer.train.normalise(raw[start:start + batch_size]))
            with trainer.autocast():
                out.append(net(x).float().softmax(1))
        return torch.cat(out).cpu().numpy()

    def save_weights(self, path: str | Path) -> Path:
        """The classifiers' weights, for a later phase or run to start from (``init_from=path``)."""
        return self.trainer.save_weights(path)


def run_experiment(*, method: str, dataset: str, noise: str, rate: float | None = None,
                   label_set: str | None = None, noise_seed: int | None = None, seed: int = 1,
                   profile: str = "smoke", held_out: float = 0.0, method_options: dict | None = None,
                   config_overrides: dict | None = None, init_from: str | Path | None = None,
                   save: bool = True, out_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None,
                   cache: bool = False, progress: bool = True) -> RunResult:
    """Train ``method`` on ``dataset`` with ``noise`` labels; return a :class:`RunResult`.

    Parameters
    ----------
    noise_seed, seed : int
        The seed of the noise draw and the splits, and the seed of training (initialisation,
        data order, augmentation). ``noise_seed`` defaults to ``seed``; both are recorded.
    held_out : float
        Keep this fraction of the training set aside, clean, as proxy external knowledge (OSA's
        ``estimator="proxy"`` trains on it); no classifier trains on it, so runs that compare
        methods should all use the same value.
    init_from : path
        Start the classifiers from weights saved by an earlier phase or run.
    save : bool
        Write the result file ``<out_dir>/<run name>.json`` and a checkpoint every epoch under
        ``checkpoint_dir`` (default ``checkpoints/`` beside the results folder); running the
        same command again after an interruption resumes from it.
    cache : bool
        Load the finished run (record and weights) from the cache when an identical run (same
        configuration, data, noise and lnlkit code) was trained before; otherwise train and
        store it. Chapters use this, so re-executing one does not retrain.
    """
    # Everything that can be refused is refused here, before data is loaded or anything is written.
    config = train_config(profile, dataset, method, seed=seed, progress=progress, **(config_overrides or {}))
    noise_seed = check_seed(seed if noise_seed is None else noise_seed, "noise seed (--noise-seed)")
    check_noise_arguments(noise, rate, noise_seed, label_set)
    resolve_device(config.device)
    if not 0.0 <= held_out < 1.0:
        raise ValueError(f"the held-out fraction (--held-out) must lie in [0, 1), got {held_out}")
    algorithm = build_method(method, **(method_options or {}))
    options = coerce_options(method, METHODS[method], method_options or {})  # "false" and False: one run
    if init_from is not None and not Path(init_from).is_file():
        raise ValueError(f"the weights to start from (init_from) do not exist: {init_from}")
    out_dir = Path(out_dir) if out_dir else results_dir()
    if save:
        check_writable(out_dir, "results folder", "choose another with --out-dir or LNLKIT_RESULTS")
    # Stages are cached on every run (finished runs too with ``cache``), so the cache must be writable.
    check_writable(cache_dir(), "cache folder", "point LNLKIT_CACHE at a writable folder")
    data = experiment_data(dataset=dataset, noise=noise, rate=rate, label_set=label_set, noise_seed=noise_seed,
                           held_out=held_out, val_fraction=config.val_fraction)
    train, val, reference, noisy = data.train, data.val, data.reference, data.noise

    spec = {"method": method, "dataset": dataset, "noise": noise, "rate": rate, "label_set": label_set,
            "noise_seed": noise_seed, "seed": seed, "profile": profile, "held_out": held_out}
    init_digest = digest(Path(init_from).read_bytes()) if init_from else None
    identity = {"spec": spec, "method_options": options, "data_source": train.source,
                "train": train.digest(), "init_from": init_digest}
    config_for_name = {k: v for k, v in asdict(config).items() if k != "progress"}
    name = run_name(**{k: spec[k] for k in ("method", "dataset", "noise", "rate", "label_set", "noise_seed",
                                             "seed", "profile")},
                    fingerprint=digest(spec, options, config_for_name, init_digest))
    checkpoint = Path(checkpoint_dir or out_dir.parent / "checkpoints") / f"{name}.pt" if save else None

    trainer = Trainer(algorithm, train, data.test, config, val=val, reference=reference,
                      noise_rate=rate if rate is not None else noisy.achieved_rate, stages=StageCache(),
                      identity=identity, checkpoint_path=checkpoint, init_from=init_from)
    cached = cache_dir() / "runs" / f"{name}-{digest(trainer.fingerprint(), code_digest())}.pt" if cache else None
    if cached is not None and cached.exists():
        stored = torch.load(cached, map_location=trainer.device, weights_only=True)
        trainer.load_state(stored["state"], f"cached run {cached}")
        # The record of the run as it was trained (its stages as they were built then), flagged as loaded.
        record = json.loads(stored["record"]) | {"loaded_from_cache": True}
    else:
        result = trainer.fit()
        record = {
            "run": spec,
            "method_options": algorithm.options(),
            "train_config": result.config,
            "noise": noisy.summary(),
            "data_source": train.source,
            "init_from": str(init_from) if init_from else None,
            "n_held_out": len(reference) if reference is not None else 0,
            "n_train": len(trainer.train), "n_val": len(trainer.val) if trainer.val is not None else 0,
            "n_test": len(data.test),
            "stages": trainer.stages.summary(),
            "final": result.final,
            "history": result.history,
            "wall_time_s": result.wall_time_s,
            "stage_time_s": sum(r.build_s for r in trainer.stages.records if r.status != "loaded"),
            "device": result.device,
            "provenance": provenance(),
        }
        if cached is not None:
            with atomic_write(cached) as tmp:
                torch.save({"record": json.dumps(record, default=float), "state": trainer.state()}, tmp)
    path = None
    if save:
        path = write_result(record, out_dir / f"{name}.json")
        checkpoint.unlink(missing_ok=True)  # the result file now holds everything the checkpoint did
    return RunResult(record, trainer, noisy, path)


__all__ = ["ExperimentData", "RunResult", "experiment_data", "run_experiment", "run_name"]
