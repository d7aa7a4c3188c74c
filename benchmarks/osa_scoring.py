"""OSA's costs: scoring throughput (pairs per second) and the training overhead over plain CE.

1. Scoring: the CLIP ViT-B/32 architecture (random weights: the speed does not depend on
   them) scores image-class pairs, batched with the class prompts embedded once, against a
   baseline that embeds one image and its prompt per pair in a Python loop. Both give the
   same similarities (checked). The paper's anchor: 566,435 pairs in about 153 s on an RTX
   3090 at batch 4096 (Sec. 4.6).
2. Overhead: CE vs OSA (proxy estimator) on the smoke profile's digits, same data and
   seed, median of three runs, OSA's set-up (proxy training, beta, scoring) included.

Run with `python benchmarks/osa_scoring.py`; `--device cuda` on a GPU.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import open_clip
import torch
from common import save

from lnlkit.estimators import CLIPEstimator
from lnlkit.methods.osa import osa_weight
from lnlkit.run import run_experiment

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--pairs", type=int, default=None, help="pairs scored batched (default 256 CPU, 16384 GPU)")
parser.add_argument("--batch", type=int, default=None, help="batch size (default 64 CPU, 1024 GPU)")
args = parser.parse_args()
device = torch.device(args.device)
on_gpu = device.type == "cuda"
n_pairs = args.pairs or (16384 if on_gpu else 256)
batch = args.batch or (1024 if on_gpu else 64)
n_loop = 256 if on_gpu else 16  # the per-pair baseline is slow: time fewer pairs

torch.manual_seed(0)
classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
estimator = CLIPEstimator(open_clip.create_model("ViT-B-32", pretrained=None), open_clip.get_tokenizer("ViT-B-32"),
                          classes, device=device, batch_size=batch)
gen = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (n_pairs, 3, 32, 32), dtype=torch.uint8, generator=gen)  # CIFAR-sized, resized inside
labels = torch.randint(0, 10, (n_pairs,), generator=gen)


def sync():
    if on_gpu:
        torch.cuda.synchronize()


estimator.pair_similarity(images[:batch], labels[:batch])  # warm-up
sync()
tic = time.perf_counter()
estimator._classes = None  # the class prompts are embedded inside the timed region
batched = estimator.pair_similarity(images, labels)
sync()
batched_s = time.perf_counter() - tic

tic = time.perf_counter()
looped = []
for i in range(n_loop):  # the naive way: one image and its prompt per forward pass
    image_emb = estimator.encode_images(images[i:i + 1].to(device))
    text_emb = estimator.encode_tokens(estimator.tokenizer([estimator.prompt.format(classes[labels[i]])]))
    looped.append((image_emb * text_emb).sum().item())
sync()
loop_s = time.perf_counter() - tic
max_diff = float(np.abs(np.array(looped) - batched[:n_loop].cpu().numpy()).max())

tic = time.perf_counter()
weights = osa_weight(torch.rand(566_435, device=device), 0.2)  # Eq. 5 for all of MS-COCO's pairs
sync()
weight_s = time.perf_counter() - tic

batched_rate, loop_rate = n_pairs / batched_s, n_loop / loop_s
print(f"scoring, batched ({batch}):  {batched_rate:,.0f} pairs/s ({n_pairs} pairs in {batched_s:.2f} s)")
print(f"scoring, per-pair loop: {loop_rate:,.1f} pairs/s ({n_loop} pairs in {loop_s:.2f} s)")
print(f"speed-up {batched_rate / loop_rate:.1f}x; largest similarity difference {max_diff:.1e}")
print(f"566,435 pairs at this rate: {566_435 / batched_rate:,.0f} s (paper: ~153 s on an RTX 3090); "
      f"Eq. 5 on all of them: {1000 * weight_s:.1f} ms")

# Training overhead of OSA over CE on the smoke profile (median of three runs each).
overhead = {}
for method, options in [("ce", {}), ("osa", {"estimator": "proxy"})]:
    totals = []
    for _ in range(3):
        # An empty cache per run, so every run builds OSA's stages; their records give the set-up time.
        os.environ["LNLKIT_CACHE"] = tempfile.mkdtemp(prefix="lnlkit-bench-")
        record = run_experiment(method=method, dataset="digits", noise="idn", rate=0.4, seed=1, held_out=0.3,
                                save=False, progress=False, method_options=options,
                                config_overrides={"device": str(device)}).record
        setup = sum(stage["build_s"] for stage in record["stages"])
        totals.append(record["wall_time_s"] + setup)
    overhead[method] = float(np.median(totals))
    print(f"{method}: {overhead[method]:.2f} s per run (median of 3, set-up included)")
print(f"OSA overhead over CE: {100 * (overhead['osa'] / overhead['ce'] - 1):+.0f} % (paper, Table 11: 118 vs 97 min for CLIP training)")

save("osa_scoring", {
    "device_kind": "gpu" if on_gpu else "cpu", "device": torch.cuda.get_device_name() if on_gpu else "cpu",
    "estimator": "open_clip ViT-B-32, random weights, 224x224 inputs resized from 32x32",
    "batched": {"pairs": n_pairs, "batch": batch, "seconds": batched_s, "pairs_per_s": batched_rate},
    "per_pair_loop": {"pairs": n_loop, "seconds": loop_s, "pairs_per_s": loop_rate},
    "speedup": batched_rate / loop_rate, "max_similarity_difference": max_diff,
    "seconds_for_566435_pairs": 566_435 / batched_rate, "paper_seconds_for_566435_pairs_rtx3090": 153,
    "eq5_weights_566435_s": weight_s,
    "training_digits_idn40_s": overhead, "osa_overhead_percent": 100 * (overhead["osa"] / overhead["ce"] - 1),
})
