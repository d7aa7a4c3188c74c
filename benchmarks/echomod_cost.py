"""EchoMod's editing cost with the generator trained here: images edited per second.

The generator (:mod:`lnlkit.controllable`: class-conditional UNet + ControlNet on the Canny map,
DDIM, classifier-free guidance) is built with random weights: its speed does not depend on them.
Each row edits images of one shape with the method's defaults (20 DDIM steps at strength 0.8,
so 16 denoising steps, each a conditional and an unconditional pass), batched as the method
edits (batches of up to 256 images), against a baseline that edits one image at a time. Rows:
CIFAR-10 (32x32 RGB) with the UNet widths of the `cpu` run (32, 64) and twice as wide, and the
8x8 digits of the smoke profile.

Run with `python benchmarks/echomod_cost.py`; `--device cuda` on a GPU.
"""

import argparse
import time

import numpy as np
import torch
from common import save

from lnlkit.controllable import TrainedEditor, train_generator

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--images", type=int, default=None, help="images edited batched (default 128 CPU, 4096 GPU)")
args = parser.parse_args()
device = torch.device(args.device)
on_gpu = device.type == "cuda"
n_batched = args.images or (4096 if on_gpu else 128)
n_single = 8  # the one-at-a-time baseline is slow: time fewer images
SETTINGS = [  # (data, size, channels, UNet widths)
    ("CIFAR-10", 32, 3, (32, 64)),
    ("CIFAR-10", 32, 3, (64, 128)),
    ("digits", 8, 1, (32, 64)),
]


def sync():
    if on_gpu:
        torch.cuda.synchronize()


def images_per_second(editor, images, labels, batch_size):
    editor.batch_size = batch_size
    editor.edit(images[:2], labels[:2])  # warm-up
    sync()
    tic = time.perf_counter()
    editor.edit(images, labels)
    sync()
    return len(images) / (time.perf_counter() - tic)


rng = np.random.default_rng(0)
rows = []
for data, size, channels, widths in SETTINGS:
    images = rng.integers(0, 256, (n_batched, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, 10, n_batched)
    # no training epochs: the weights are the random initialisation
    artefact = train_generator(images[:2], labels[:2], 10, base_epochs=0, control_epochs=0, widths=widths)
    editor = TrainedEditor(artefact, device=device)
    batched = images_per_second(editor, images, labels, 256)
    single = images_per_second(editor, images[:n_single], labels[:n_single], 1)
    parameters = sum(p.numel() for part in (editor.unet, editor.controlnet) for p in part.parameters())
    rows.append({"data": data, "size": size, "channels": channels, "widths": list(widths),
                 "parameters": parameters, "steps": editor.steps, "strength": editor.strength,
                 "images_batched": n_batched, "batched_images_per_s": batched,
                 "images_single": n_single, "single_images_per_s": single, "speed-up": batched / single})
    print(f"{data} {size}px widths {widths}: {batched:.1f} images/s batched, {single:.1f} one at a time "
          f"({batched / single:.1f}x); {parameters:,} parameters")

save("echomod_cost", {"device": str(device), "device_kind": device.type, "threads": torch.get_num_threads(),
                      "rows": rows})
