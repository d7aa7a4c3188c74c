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
from dataclasses import dataclass
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
from .trainer import TrainConfig, Trainer, resolve_device


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
            out.append(trainer.logits(net, trainer.train.normalise(raw[start:start + batch_size])).softmax(1))
        return torch.cat(out).cpu().numpy()

    def save_weights(self, path: str | Path) -> Path:
        """The classifiers' weights, for a later phase or run to start from (``init_from=path``)."""
        return self.trainer.save_weights(path)


@dataclass
class RunPlan:
    """What a run will be, known before any data is loaded: its configuration, name and files."""

    spec: dict  # method, dataset, noise, rate, label_set, noise_seed, seed, profile, held_out
    options: dict  # the method's options, type-checked
    config: TrainConfig
    name: str
    result_path: Path
    checkpoint_path: Path
    init_digest: str | None = None


def true_transition_rows(noise: NoisyLabels, train: LabelledData) -> tuple[np.ndarray, str]:
    """The true row T(x_i)_{y_i} of each training sample, and what it is.

    IDN: the estimable row (its whole T(x) follows from the noise's projection); symmetric and
    pair-flip: the row of the class-level T that drew the labels; human labels: the one-hot
    noisy label, whose mean per class (or per cluster) is the empirical transition.
    """
    if noise.idn_projection is not None:
        t = noise.estimable_transition(train.flat_pixels_chw())
        return t[np.arange(len(train)), train.labels], "estimable IDN rows"
    if noise.transition is not None:
        return noise.transition[train.labels], f"the {noise.kind} transition matrix"
    return np.eye(noise.num_classes)[train.noisy_labels], "one-hot noisy labels (empirical transition)"


def transition_record(method, train: LabelledData, noise: NoisyLabels) -> dict | None:
    """What a T-estimating method found, scored against the truth (:func:`lnlkit.transition.transition_report`)."""
    from .transition import transition_report

    estimate = method.transition_estimate()
    if estimate is None:
        return None
    true_rows, truth = true_transition_rows(noise, train)
    record = {"truth": truth, "scores": transition_report(estimate, true_rows, train.labels, train.noisy_labels,
                                                         method.transition_groups(),
                                                         method.transition_references())}
    if np.ndim(estimate) == 2:  # one T for all images: keep it
        record["estimate"] = np.round(estimate, 6).tolist()
    return record


def plan_run(*, method: str, dataset: str, noise: str, rate: float | None = None, label_set: str | None = None,
             noise_seed: int | None = None, seed: int = 1, profile: str = "smoke", held_out: float = 0.0,
             method_options: dict | None = None, config_overrides: dict | None = None,
             init_from: str | Path | None = None, out_dir: str | Path | None = None,
             checkpoint_dir: str | Path | None = None, progress: bool = True) -> RunPlan:
    """Check every argument of a run (a mistake is refused here, before any work) and name its files.

    :func:`run_experiment` starts with this; a sweep uses it to skip runs whose result file exists.
    """
    config = train_config(profile, dataset, method, seed=seed, progress=progress, **(config_overrides or {}))
    noise_seed = check_seed(seed if noise_seed is None else noise_seed, "noise seed (--noise-seed)")
    check_noise_arguments(noise, rate, noise_seed, label_set)
    resolve_device(config.device)
    if not 0.0 <= held_out < 1.0:
        raise ValueError(f"the held-out fraction (--held-out) must lie in [0, 1), got {held_out}")
    build_method(method, **(method_options or {}))
    options = coerce_options(method, METHODS[method], method_options or {})  # "false" and False: one run
    if init_from is not None and not Path(init_from).is_file():
        raise ValueError(f"the weights to start from (init_from) do not exist: {init_from}")
    spec = {"method": method, "dataset": dataset, "noise": noise, "rate": rate, "label_set": label_set,
            "noise_seed": noise_seed, "seed": seed, "profile": profile, "held_out": held_out}
    init_digest = digest(Path(init_from).read_bytes()) if init_from else None
    name = run_name(**{k: spec[k] for k in ("method", "dataset", "noise", "rate", "label_set", "noise_seed",
                                             "seed", "profile")},
                    fingerprint=digest(spec, options, config.settings(), init_digest))
    out_dir = Path(out_dir) if out_dir else results_dir()
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else out_dir.parent / "checkpoints"
    return RunPlan(spec, options, config, name, out_dir / f"{name}.json", checkpoints / f"{name}.pt", init_digest)


def _build_trainer(plan: RunPlan, method_options: dict | None, init_from, checkpoint=None):
    """Data, noise and splits of a planned run, and the trainer with the method built from its options."""
    spec = plan.spec
    algorithm = build_method(spec["method"], **(method_options or {}))
    # Stages are cached on every run (finished runs too with ``cache``), so the cache must be writable.
    check_writable(cache_dir(), "cache folder", "point LNLKIT_CACHE at a writable folder")
    data = experiment_data(dataset=spec["dataset"], noise=spec["noise"], rate=spec["rate"],
                           label_set=spec["label_set"], noise_seed=spec["noise_seed"], held_out=spec["held_out"],
                           val_fraction=plan.config.val_fraction)
    identity = {"spec": spec, "method_options": plan.options, "data_source": data.train.source,
                "train": data.train.digest(), "init_from": plan.init_digest}
    rate = spec["rate"] if spec["rate"] is not None else data.noise.achieved_rate
    trainer = Trainer(algorithm, data.train, data.test, plan.config, val=data.val, reference=data.reference,
                      noise_rate=rate, stages=StageCache(), identity=identity, checkpoint_path=checkpoint,
                      init_from=init_from)
    return trainer, data


def rerun_epochs(record: dict, epochs: int = 1, progress: bool = False) -> list[dict]:
    """Train the run that ``record`` (a result file's content) describes again, for its first ``epochs``
    epochs, with its recorded configuration; return their history entries (to compare with the file's)."""
    import inspect

    method = record["run"]["method"]
    accepted = inspect.signature(METHODS[method]).parameters
    # The record's method options also hold what a method measured (OSA's beta); keep the inputs only.
    options = {k: v for k, v in record["method_options"].items() if k in accepted}
    config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in record["train_config"].items()
              if k not in ("seed", "progress")}
    run = record["run"]
    plan = plan_run(method=method, dataset=run["dataset"], noise=run["noise"], rate=run["rate"],
                    label_set=run["label_set"], noise_seed=run["noise_seed"], seed=run["seed"],
                    profile=run["profile"], held_out=run.get("held_out", 0.0), method_options=options,
                    config_overrides=config, progress=progress)
    if record.get("init_from"):
        raise ValueError("this run started from another run's weights; rerun that one first")
    trainer, _ = _build_trainer(plan, options, None)
    return trainer.fit(until_epoch=epochs).history


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
    plan = plan_run(method=method, dataset=dataset, noise=noise, rate=rate, label_set=label_set,
                    noise_seed=noise_seed, seed=seed, profile=profile, held_out=held_out,
                    method_options=method_options, config_overrides=config_overrides, init_from=init_from,
                    out_dir=out_dir, checkpoint_dir=checkpoint_dir, progress=progress)
    if save:
        check_writable(plan.result_path.parent, "results folder", "choose another with --out-dir or LNLKIT_RESULTS")
    trainer, data = _build_trainer(plan, method_options, init_from, checkpoint=plan.checkpoint_path if save else None)
    train, reference, noisy, algorithm = data.train, data.reference, data.noise, trainer.method
    cached = cache_dir() / "runs" / f"{plan.name}-{digest(trainer.fingerprint(), code_digest())}.pt" if cache else None
    if cached is not None and cached.exists():
        stored = torch.load(cached, map_location=trainer.device, weights_only=True)
        trainer.load_state(stored["state"], f"cached run {cached}")
        # The record of the run as it was trained (its stages as they were built then), flagged as loaded.
        record = json.loads(stored["record"]) | {"loaded_from_cache": True}
    else:
        result = trainer.fit()
        record = {
            "run": plan.spec,
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
            "transition": transition_record(algorithm, train, noisy),
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
        path = write_result(record, plan.result_path)
        plan.checkpoint_path.unlink(missing_ok=True)  # the result file now holds everything the checkpoint did
    return RunResult(record, trainer, noisy, path)


__all__ = ["ExperimentData", "RunPlan", "RunResult", "experiment_data", "plan_run", "rerun_epochs", "run_experiment",
           "run_name"]
