"""The `cpu` profile's recipe, chosen by measurement: accuracy against minutes on CIFAR-10, clean labels.

Every candidate is a set of TrainConfig overrides on top of the `cpu` profile, trained with
CE on clean labels through `lnlkit.run.run_experiment` (the code every run uses), in this one
process, one after another. A candidate is judged on a validation split of 5,000 training
images (the profile's honest model choice: no test-set peeking); the test accuracy is recorded
beside it. The chosen recipe is then trained on all 50,000 images, as `python -m lnlkit run
--method ce --dataset cifar10 --noise symmetric --rate 0.0 --profile cpu` does.

Run `python benchmarks/cpu_profile.py [--candidates NAME ...] [--skip-final]`. The file
benchmarks/results/cpu_profile-cpu.json is written after every candidate, so an interrupted run
keeps what it finished; entries of earlier runs stay (each records its date and commit) unless
the same candidate is trained again.
"""

import argparse
import json
import time

import torch
from common import OUT, save

from lnlkit.profiles import train_config
from lnlkit.run import run_experiment

# name -> (what it tries, overrides of the cpu profile)
CANDIDATES = {
    "chosen": ("the cpu profile as it is (max-pool, GELU, base width 32, batch 512, 15 epochs)", {}),
    "20-epochs": ("20 epochs", {"epochs": 20}),
    "bf16": ("bfloat16 autocast on the CPU (AVX512-BF16)", {"cpu_bf16": True}),
    "bf16-24-epochs": ("bfloat16 autocast, 24 epochs", {"cpu_bf16": True, "epochs": 24}),
    "bf16-36-epochs": ("bfloat16 autocast, 36 epochs", {"cpu_bf16": True, "epochs": 36}),
    "bf16-w48": ("bfloat16 autocast, base width 48", {"cpu_bf16": True, "model": "compact_resnet_w48"}),
    "bf16-w48-20ep": ("bfloat16 autocast, base width 48, 20 epochs",
                      {"cpu_bf16": True, "model": "compact_resnet_w48", "epochs": 20}),
    "bf16-w48-27ep": ("bfloat16 autocast, base width 48, 27 epochs (about 11 min at the 20-epoch pace)",
                      {"cpu_bf16": True, "model": "compact_resnet_w48", "epochs": 27}),
    "batch256-16ep": ("batch 256, 16 epochs", {"batch_size": 256, "epochs": 16}),
    "relu": ("ReLU instead of GELU", {"model": "compact_resnet_relu"}),
    "stride-w32-26ep": ("stride-2 convolutions instead of max-pool (cheaper steps), 26 epochs",
                        {"model": "compact_resnet_w32_stride_relu", "epochs": 26}),
    "stride-w64-8ep": ("stride-2 convolutions, base width 64, 8 epochs",
                       {"model": "compact_resnet_w64_stride_relu", "epochs": 8}),
    "w48-10ep": ("base width 48, 10 epochs", {"model": "compact_resnet_w48", "epochs": 10}),
    "no-tta": ("without flip test-time augmentation", {"tta_flip": False}),
    "nchw": ("NCHW memory layout instead of channels_last", {"channels_last": False}),
}

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--candidates", nargs="*", choices=sorted(CANDIDATES), default=sorted(CANDIDATES),
                    help="candidates to train (none: only the final run)")
parser.add_argument("--skip-final", action="store_true", help="do not train the chosen recipe on all 50,000 images")
parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

path = OUT / "cpu_profile-cpu.json"
previous = json.loads(path.read_text())["candidates"] if path.exists() else {}


def train(overrides: dict, val_fraction: float) -> dict:
    tic = time.perf_counter()
    result = run_experiment(method="ce", dataset="cifar10", noise="symmetric", rate=0.0, profile="cpu",
                            config_overrides=overrides | {"val_fraction": val_fraction}, save=False, progress=False)
    minutes = (time.perf_counter() - tic) / 60
    history = result.history
    return {"config": train_config("cpu", "cifar10", "ce", **overrides | {"val_fraction": val_fraction}).__dict__,
            "minutes_total": minutes, "minutes_training": result.record["wall_time_s"] / 60,
            "test_acc_final": result.final["test_acc_final"],
            "val_acc_final": history[-1].get("val_acc"), "n_train": result.record["n_train"],
            "test_acc_per_epoch": [h["test_acc"] for h in history],
            "epoch_time_s": [h["epoch_time_s"] for h in history], "device": result.record["device"],
            "provenance": result.record["provenance"]}


def write(candidates: dict, final: dict | None) -> None:
    save("cpu_profile", {"about": __doc__.splitlines()[0], "device_kind": "cpu", "threads": torch.get_num_threads(),
                         "candidates": candidates, "final": final})


candidates = dict(previous)
final = json.loads(path.read_text()).get("final") if path.exists() else None
for name in args.candidates:
    about, overrides = CANDIDATES[name]
    print(f"{name}: {about} ...", flush=True)
    candidates[name] = {"about": about, "overrides": overrides, **train(overrides, val_fraction=0.1)}
    c = candidates[name]
    print(f"  {c['minutes_total']:.1f} min, validation {100 * c['val_acc_final']:.2f} %, "
          f"test {100 * c['test_acc_final']:.2f} %", flush=True)
    write(candidates, final)

if not args.skip_final:
    print("the cpu profile on all 50,000 training images ...", flush=True)
    final = train({}, val_fraction=0.0)
    print(f"  {final['minutes_total']:.1f} min, test {100 * final['test_acc_final']:.2f} %")
    write(candidates, final)
