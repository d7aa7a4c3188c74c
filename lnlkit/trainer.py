"""One trainer that every method plugs into.

The data set lives once on the device as uint8; crops, flips and normalisation are done
on the device in batches, so CPU and GPU run the same code. A method prepares its stages
before training and changes training through hooks (see :class:`lnlkit.methods.Method`):
per-sample loss weights, per-network sample selection, extra networks, parameter groups
with their own optimizer, its own loss for a batch, its own validation loss. Every epoch is
evaluated on the clean test set (and the noisy validation split, if any) and checkpointed; a
run that is interrupted resumes where it stopped and ends with the same numbers as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import LabelledData
from .files import atomic_write, digest
from .methods.base import ParameterGroup, RunFacts
from .models import build_model
from .noise import check_seed
from .stages import StageCache


# TrainConfig fields added after results were committed, with their defaults (see TrainConfig.settings)
LATER_FIELDS = {"cpu_bf16": False}


@dataclass
class TrainConfig:
    model: str = "resnet18"
    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD momentum, or Adam's beta1 before the Co-teaching decay
    nesterov: bool = False  # SGD with Nesterov momentum
    weight_decay: float = 0.0
    schedule: str = "coteaching"  # "constant", "multistep", "cosine", "coteaching" or "onecycle"
    warmup: float = 0.2  # onecycle: fraction of training with a linear rise to lr, then a linear fall to 0
    milestones: tuple = (100, 150)  # multistep: epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    decay_start: int = 80  # coteaching: lr falls linearly to 0 from here, beta1 0.9 -> 0.1
    crop_padding: int = 4  # random crop with this zero padding (pixels); 0 = no crop
    flip: bool = True  # random horizontal flip
    tta_flip: bool = False  # evaluate on the mean logits of each image and its mirror image
    val_fraction: float = 0.0  # noisy validation split that run_experiment makes (Xia et al./VolMinNet: 0.1)
    eval_batch_size: int = 2048
    seed: int = 1
    device: str = "auto"  # "auto" = CUDA when available
    amp: bool = True  # bfloat16 autocast on CUDA
    cpu_bf16: bool = False  # bfloat16 autocast on CPU as well (pays where the CPU has AVX512-BF16 or AMX)
    channels_last: bool = True  # NHWC memory layout for images (faster convolutions on GPU and CPU)
    progress: bool = True

    def settings(self) -> dict:
        """The settings that define a run (not ``progress``). Fields added after results and checkpoints
        were made (``LATER_FIELDS``) enter only when set, so those files keep their names and resume."""
        return {k: v for k, v in asdict(self).items()
                if k != "progress" and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr!r}")
        if self.crop_padding < 0 or self.weight_decay < 0:
            raise ValueError("crop_padding and weight_decay must not be negative")
        check_seed(self.seed, "training seed (--seed)")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must lie in [0, 1), got {self.warmup}")
        if self.schedule not in ("constant", "multistep", "cosine", "coteaching", "onecycle"):
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        self.milestones = tuple(self.milestones)


def lr_and_beta1(config: TrainConfig, epoch: float) -> tuple[float, float]:
    """Learning rate and momentum/beta1 at an epoch (0-based; fractional within an epoch for the
    one-cycle schedule, which changes every step): a pure function, so resume needs no state."""
    lr, beta1 = config.lr, config.momentum
    if config.schedule == "onecycle":
        progress = epoch / config.epochs
        if progress < config.warmup:
            lr *= progress / config.warmup
        else:
            lr *= (1 - progress) / (1 - config.warmup)
    elif config.schedule == "multistep":
        lr *= config.gamma ** sum(epoch >= m for m in config.milestones)
    elif config.schedule == "cosine":
        lr *= 0.5 * (1 + np.cos(np.pi * epoch / config.epochs))
    elif config.schedule == "coteaching" and epoch >= config.decay_start:
        # Han et al.'s code: linear decay to 0 at the last epoch; Adam's beta1 steps to 0.1.
        lr *= (config.epochs - epoch) / (config.epochs - config.decay_start)
        beta1 = 0.1
    return float(lr), float(beta1)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a clear error otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N (or leave --device out)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or leave it out)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says what was kept and how to resume."""


class DeviceData:
    """Inputs stored once on the device (uint8 images as N, C, H, W); batches made there.

    ``noisy_labels`` are what training (or model selection) sees; ``clean_labels`` are known
    for measurement (test accuracy, label precision). Either may be None.
    """

    def __init__(self, inputs: np.ndarray, device: torch.device, *, noisy_labels=None, clean_labels=None,
                 mean=None, std=None):
        self.is_image = inputs.ndim == 4
        x = torch.from_numpy(np.ascontiguousarray(inputs.transpose(0, 3, 1, 2) if self.is_image else inputs))
        self.inputs = x.to(device)
        self.noisy_labels = None if noisy_labels is None else torch.as_tensor(noisy_labels, dtype=torch.long,
                                                                              device=device)
        self.clean_labels = None if clean_labels is None else torch.as_tensor(clean_labels, dtype=torch.long,
                                                                              device=device)
        self.device = device
        if mean is None:  # statistics of these inputs (per channel for images, per feature otherwise)
            dims = (0, 2, 3) if self.is_image else (0,)
            scale = 255.0 if self.is_image else 1.0
            values = self.inputs.float() / scale
            mean, std = values.mean(dims), values.std(dims).clamp_min(1e-6)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.inputs)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_image:
            return (x.float() / 255.0 - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return (x.float() - self.mean) / self.std

    def augment(self, x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
        """Random crop with zero padding and random horizontal flip, for a whole uint8 batch at once."""
        n, c, h, w = x.shape
        if padding > 0:
            padded = F.pad(x, (padding,) * 4)
            dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
            dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                       torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
        if flip:
            mirror = torch.rand(n, device=x.device, generator=generator) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        return x

    def batches(self, batch_size: int, generator: torch.Generator | None = None, padding: int = 0,
                flip: bool = False):
        """Yield (indices, normalised inputs); shuffled and augmented when a generator is given."""
        n = len(self)
        order = torch.randperm(n, device=self.device, generator=generator) if generator is not None \
            else torch.arange(n, device=self.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = self.inputs[idx]
            if generator is not None and self.is_image:
                x = self.augment(x, padding, flip, generator)
            yield idx, self.normalise(x)


@dataclass
class Batch:
    indices: torch.Tensor  # positions in the training set
    inputs: torch.Tensor
    noisy_labels: torch.Tensor


@dataclass
class TrainResult:
    history: list[dict]
    final: dict
    config: dict
    wall_time_s: float
    device: str
    networks: list = field(default_factory=list, repr=False)


def summarise_history(history: list[dict]) -> dict:
    """Final metrics in each paper's convention.

    - ``test_acc_last10_mean``: mean test accuracy of the last 10 epochs (CausalNL);
    - ``test_acc_at_min_val_loss``: at the epoch of minimum noisy-validation loss (VolMinNet,
      DTM), when a validation split exists: model selection without clean labels;
    - ``test_acc_oracle_best``: the best epoch by *test* accuracy (EchoAlign's code). It picks
      the epoch by looking at the test set, so it is an oracle, not a result, and is named so.
    """
    acc = np.array([h["test_acc"] for h in history])
    final = {"test_acc_last10_mean": float(acc[-10:].mean()), "test_acc_final": float(acc[-1]),
             "test_acc_oracle_best": float(acc.max()), "oracle_best_epoch": int(acc.argmax()) + 1}
    if history and history[0].get("val_loss") is not None:
        at = int(np.argmin([h["val_loss"] for h in history]))
        final |= {"test_acc_at_min_val_loss": float(acc[at]), "min_val_loss_epoch": at + 1}
    return final


def load_weights_file(path: str | Path) -> dict:
    """Weights saved by :meth:`Trainer.save_weights` (tensors only: loading runs no code)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


class Trainer:
    """Train the networks a method asks for on noisy labels; evaluate on clean test labels every epoch.

    Parameters
    ----------
    method : Method
    train : LabelledData with ``noisy_labels``
        The training set (noise drawn before any split). Clean labels are used to measure only.
    test : LabelledData
        Clean test set.
    config : TrainConfig
    val : LabelledData with ``noisy_labels``, optional
        A noisy validation split; the method's ``validation_loss`` on it selects the model.
    reference : LabelledData, optional
        A clean held-out split for methods that train proxy external knowledge on it.
    noise_rate : float, optional
        The nominal noise rate; default: the measured rate of ``train``.
    stages : StageCache, optional
        Where the method's stages are cached (default: built, not cached).
    identity : dict, optional
        What defines the run beyond ``config`` (data, noise, seeds, options); a checkpoint made
        for another identity is refused.
    init_from : path or dict, optional
        Start the classifiers from weights saved by an earlier phase or run
        (:meth:`save_weights`), instead of a fresh initialisation.
    """

    def __init__(self, method, train: LabelledData, test: LabelledData, config: TrainConfig, *,
                 val: LabelledData | None = None, reference: LabelledData | None = None,
                 noise_rate: float | None = None, stages: StageCache | None = None, identity: dict | None = None,
                 checkpoint_path: str | Path | None = None, init_from: str | Path | dict | None = None):
        for name, split in [("train", train), ("val", val)]:
            if split is not None and split.noisy_labels is None:
                raise ValueError(f"the {name} split has no noisy labels: attach them with with_noisy_labels(...)")
        self.method, self.config = method, config
        self.device = resolve_device(config.device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.stages = stages if stages is not None else StageCache(enabled=False)
        self.identity = dict(identity or {})
        if noise_rate is None:
            noise_rate = float(np.mean(train.noisy_labels != train.labels))
        facts = RunFacts(train=train, noise_rate=noise_rate, device=self.device, seed=config.seed,
                         reference=reference, model=config.model, progress=config.progress,
                         unlabelled_images=None if val is None else val.inputs)
        method.prepare(facts, self.stages)
        train = method.training_set(train)
        self.num_classes, self.input_shape = train.num_classes, tuple(train.inputs.shape[1:])
        self.train = DeviceData(train.inputs, self.device, noisy_labels=train.noisy_labels, clean_labels=train.labels)
        self.val = None if val is None else DeviceData(val.inputs, self.device, noisy_labels=val.noisy_labels,
                                                       clean_labels=val.labels, mean=self.train.mean,
                                                       std=self.train.std)
        self.test = DeviceData(test.inputs, self.device, clean_labels=test.labels, mean=self.train.mean,
                               std=self.train.std)

        self.channels_last = config.channels_last and self.train.is_image
        torch.manual_seed(config.seed)
        self.networks = [build_model(config.model, self.num_classes, self.input_shape).to(self.device)
                         for _ in range(method.num_networks)]
        if init_from is not None:
            weights = init_from if isinstance(init_from, dict) else load_weights_file(init_from)
            for net, state in zip(self.networks, weights["networks"]):
                net.load_state_dict(state)
        else:
            # Data-dependent initialisation (CompactResNet's patch whitening): training images only, no labels.
            sample = self.train.normalise(self.train.inputs[:5000])
            for net in self.networks:
                if hasattr(net, "init_from_data"):
                    net.init_from_data(sample)
        if self.channels_last:
            self.networks = [net.to(memory_format=torch.channels_last) for net in self.networks]
        # Modules a method trains beside its classifiers (CausalNL's encoders and decoders).
        self.auxiliary = nn.ModuleList(method.auxiliary_networks(self)).to(self.device)
        if self.channels_last:
            self.auxiliary = self.auxiliary.to(memory_format=torch.channels_last)
        main = ParameterGroup("main", [p for net in self.networks for p in net.parameters()]
                              + list(self.auxiliary.parameters()), config.optimizer, config.lr, config.momentum,
                              config.weight_decay, nesterov=config.nesterov)
        self.groups = [main, *method.parameter_groups(self)]
        self.optimizers = [group.build() for group in self.groups]
        self.history: list[dict] = []
        method.setup(self)

    # ------------------------------------------------------------ pieces other loops reuse

    def autocast(self):
        if (self.device.type == "cuda" and self.config.amp) or (self.device.type == "cpu" and self.config.cpu_bf16):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def logits(self, net, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits of a normalised batch; with ``tta_flip`` the mean over the image and its mirror."""
        with self.autocast():
            out = net(self.prepare(x)).float()
            if self.config.tta_flip and x.ndim == 4:
                out = (out + net(self.prepare(x.flip(3))).float()) / 2
        return out

    @torch.no_grad()
    def evaluate(self, net, data: DeviceData, labels: torch.Tensor, loss_fn=None) -> tuple[float, float]:
        """Mean loss (cross-entropy unless ``loss_fn`` gives per-sample losses) and accuracy against ``labels``."""
        net.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for idx, x in data.batches(self.config.eval_batch_size):
            y = labels[idx]
            logits = self.logits(net, x)
            losses = loss_fn(logits, y) if loss_fn else F.cross_entropy(logits, y, reduction="none")
            loss_sum += losses.sum()
            correct += (logits.argmax(1) == y).sum()
        return loss_sum.item() / len(data), correct.item() / len(data)

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """A generator seeded from (seed, epoch): data order and augmentation survive a resume."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.config.seed * 100_003 + epoch)
        return gen

    # ------------------------------------------------------------ training

    def _set_learning_rates(self, epoch: float) -> float:
        lr, beta1 = lr_and_beta1(self.config, epoch)
        factor = lr / self.config.lr if self.config.lr else 1.0
        for group, optimizer in zip(self.groups, self.optimizers):
            if group.name == "main":  # the classifiers: the profile's schedule, incl. Co-teaching's beta1
                values = {"lr": lr, "momentum": beta1}
            else:
                values = {"lr": group.lr * factor if group.follow_schedule else group.lr, "momentum": group.momentum}
            for param_group in optimizer.param_groups:
                param_group["lr"] = values["lr"]
                if "betas" in param_group:
                    param_group["betas"] = (values["momentum"], param_group["betas"][1])
                else:
                    param_group["momentum"] = values["momentum"]
        return lr

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.config
        lr = self._set_learning_rates(epoch)
        self.method.on_epoch_start(epoch)
        for net in [*self.networks, self.auxiliary]:
            net.train()
        # Running sums stay on the device: reading them per batch would sync the GPU every step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        selected = torch.zeros((), dtype=torch.long, device=self.device)
        selected_clean = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        gen = self.epoch_generator(epoch)
        steps = -(-len(self.train) // cfg.batch_size)
        for step, (idx, x) in enumerate(self.train.batches(cfg.batch_size, gen, cfg.crop_padding, cfg.flip)):
            if cfg.schedule == "onecycle":  # the one-cycle schedule moves every step
                self._set_learning_rates(epoch + step / steps)
            y = self.train.noisy_labels[idx]
            batch = Batch(idx, self.prepare(x), y)
            loss, mask = self.method.batch_loss(self, batch, epoch)
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in self.optimizers:
                optimizer.step()
            loss_sum += loss.detach().double() * len(y)
            seen += len(y)
            selected += mask.sum()
            selected_clean += (mask & (y == self.train.clean_labels[idx])).sum()
        return {"lr": lr, "train_loss": loss_sum.item() / seen, "selected_fraction": selected.item() / seen,
                "label_precision": selected_clean.item() / max(selected.item(), 1)}

    def fit(self, until_epoch: int | None = None) -> TrainResult:
        """Train to ``config.epochs`` (or stop after ``until_epoch``, e.g. to simulate an interruption)."""
        from tqdm import tqdm

        cfg = self.config
        start = self._resume()
        stop = cfg.epochs if until_epoch is None else min(until_epoch, cfg.epochs)
        bar = tqdm(range(start, stop), desc=f"{self.method.name} on {self.device.type}", disable=not cfg.progress,
                   initial=start, total=cfg.epochs)
        for epoch in bar:
            tic = time.perf_counter()
            try:
                record = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            except KeyboardInterrupt:
                bar.close()
                kept = (f"{len(self.history)} finished epoch(s) are in {self.checkpoint_path}; run the same command "
                        "again to resume from there" if self.checkpoint_path and self.history
                        else "no epoch had finished, so nothing was kept")
                raise RunInterrupted(f"Training stopped in epoch {epoch + 1}: {kept}.") from None
            accs = [self.evaluate(net, self.test, self.test.clean_labels)[1] for net in self.networks]
            record |= {"test_acc": accs[0], "test_acc_per_network": accs}
            if self.val is not None:
                record["val_loss"], record["val_acc"] = self.evaluate(self.networks[0], self.val,
                                                                      self.val.noisy_labels,
                                                                      self.method.validation_loss)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            record["epoch_time_s"] = time.perf_counter() - tic
            self.history.append(record)
            self._save_checkpoint(epoch)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", test_acc=f"{record['test_acc']:.4f}")
        return self.result()

    def result(self) -> TrainResult:
        elapsed = sum(h["epoch_time_s"] for h in self.history)
        return TrainResult(self.history, summarise_history(self.history) if self.history else {},
                           asdict(self.config), elapsed, device_name(self.device), self.networks)

    # ------------------------------------------------------------ checkpoints and weights

    def fingerprint(self) -> str:
        """A digest of everything that defines the run: config (but progress), method options, identity."""
        return digest(self.config.settings(), self.method.options(), self.identity)

    def state(self) -> dict:
        return {"fingerprint": self.fingerprint(), "history": self.history,
                "networks": [net.state_dict() for net in self.networks], "auxiliary": self.auxiliary.state_dict(),
                "optimizers": [opt.state_dict() for opt in self.optimizers], "method": self.method.state_dict(),
                # Methods that draw random numbers in the loss (mixup, Gumbel-softmax) resume exactly.
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def load_state(self, state: dict, source: str | Path) -> None:
        """Restore what :meth:`state` saved; refuse a state made for another run."""
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError(f"{source} was written by a run with another configuration, method options, data or "
                             "noise; delete it, or run with the settings it was made with")
        for net, sd in zip(self.networks, state["networks"]):
            net.load_state_dict(sd)
        self.auxiliary.load_state_dict(state["auxiliary"])
        torch.set_rng_state(state["rng"].cpu())
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        for optimizer, sd in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(sd)
        self.method.load_state_dict(state["method"])
        self.history = list(state["history"])

    def save_weights(self, path: str | Path) -> Path:
        """The classifiers' weights, for a later phase or run to start from (``init_from``)."""
        with atomic_write(path) as tmp:
            torch.save({"networks": [net.state_dict() for net in self.networks], "fingerprint": self.fingerprint()},
                       tmp)
        return Path(path)

    def _save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        with atomic_write(self.checkpoint_path) as tmp:  # a kill during the write keeps the previous checkpoint
            torch.save(self.state(), tmp)

    def _resume(self) -> int:
        """Load the checkpoint when there is one for this exact run; return the first epoch to run."""
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return 0
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        except Exception as error:
            raise ValueError(f"checkpoint {self.checkpoint_path} cannot be read ({type(error).__name__}); delete it "
                             "to start the run afresh") from None
        self.load_state(state, f"checkpoint {self.checkpoint_path}")
        return len(self.history)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
