"""Epoch time of the GPU-resident data path vs a torchvision DataLoader pipeline (ResNet-18, CIFAR-10).

Both apply the same augmentation (random crop with 4-pixel zero padding, horizontal flip,
normalisation), measured in the same run:

- data only: one full epoch of augmented batches (50,000 images, batch 128), no model;
- training: `--steps` ResNet-18 training steps (forward, backward, Adam step), twice per path
  in alternation (best kept), reported per step and extrapolated to an epoch (391 steps).

Run `python benchmarks/data_path.py [--device cuda] [--steps N]`.
"""

import argparse
import time

import torch
from common import cifar10_train, save
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from lnlkit.models import resnet18
from lnlkit.trainer import DeviceData, resolve_device

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="auto")
parser.add_argument("--steps", type=int, default=None, help="training steps to time (default: 10 on CPU, 391 on GPU)")
parser.add_argument("--workers", type=int, default=2)
args = parser.parse_args()
device = resolve_device(args.device)
steps = args.steps or (391 if device.type == "cuda" else 10)
torch.manual_seed(0)
train = cifar10_train()
BATCH = 128


class PilDataset(Dataset):
    """The usual pipeline: PIL image -> RandomCrop(32, 4) -> flip -> ToTensor -> Normalize, per sample."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToPILImage(), transforms.RandomCrop(32, padding=4),
                                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                             transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


resident = DeviceData(train.inputs, device, noisy_labels=train.labels)
loader = DataLoader(PilDataset(train.inputs, train.labels, resident.mean.tolist(), resident.std.tolist()),
                    batch_size=BATCH, shuffle=True, num_workers=args.workers, pin_memory=device.type == "cuda",
                    persistent_workers=args.workers > 0)


def resident_batches():
    gen = torch.Generator(device=device).manual_seed(0)
    for idx, x in resident.batches(BATCH, gen, padding=4, flip=True):
        y = resident.noisy_labels[idx]
        yield x, y


def loader_batches():
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_data_epoch(batches):
    sync()
    tic = time.perf_counter()
    for x, _ in batches():
        x.sum()  # touch the batch
    sync()
    return time.perf_counter() - tic


def time_training(batches, n_steps):
    model = resnet18().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    it, done = batches(), 0
    for x, y in it:  # one warm-up step
        break
    sync()
    tic = time.perf_counter()
    for x, y in it:
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
        if done == n_steps:
            break
    sync()
    return (time.perf_counter() - tic) / done


record = {"device": str(torch.cuda.get_device_name() if device.type == "cuda" else "cpu"), "device_kind": device.type,
          "torch_threads": torch.get_num_threads(), "dataloader_workers": args.workers, "batch_size": BATCH,
          "data": train.source}
record["data_epoch_s"] = {"gpu-resident path": time_data_epoch(resident_batches),
                          "DataLoader": time_data_epoch(loader_batches)}
# Alternate the two paths (A, B, A, B) and keep each one's best, so warm-up favours neither.
record["train_step_s"] = {"gpu-resident path": float("inf"), "DataLoader": float("inf")}
for _ in range(2):
    for name, batches in [("gpu-resident path", resident_batches), ("DataLoader", loader_batches)]:
        record["train_step_s"][name] = min(record["train_step_s"][name], time_training(batches, steps))
record["timed_steps"] = steps
record["train_epoch_s_extrapolated"] = {k: v * 391 for k, v in record["train_step_s"].items()}
for what in ["data_epoch_s", "train_step_s", "train_epoch_s_extrapolated"]:
    a, b = record[what]["gpu-resident path"], record[what]["DataLoader"]
    print(f"{what:>28}: resident {a:8.3f} s | DataLoader {b:8.3f} s | ratio {b / a:5.1f}x")
save("data_path", record)
