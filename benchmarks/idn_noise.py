"""Instance-dependent noise for the 50,000 CIFAR-10 training images: vectorised vs per-sample loop.

Both produce the same labels (checked here); run with `python benchmarks/idn_noise.py`.
"""

import time

import numpy as np
import scipy.stats  # noqa: F401  (imported before timing: its import takes ~0.5 s)
from common import cifar10_train, save

from lnlkit.noise import instance_dependent_noise, instance_dependent_noise_loop

train = cifar10_train()
x = train.flat_pixels_chw()
REPEATS = 3  # best of 3 for each
timings = {}
for name, fn in [("vectorised", lambda: instance_dependent_noise(x, train.labels, 10, 0.4, seed=1).noisy),
                 ("per-sample loop", lambda: instance_dependent_noise_loop(x, train.labels, 10, 0.4, seed=1))]:
    best = float("inf")
    for _ in range(REPEATS):
        tic = time.perf_counter()
        labels = fn()
        best = min(best, time.perf_counter() - tic)
    timings[name] = (best, labels)
    print(f"{name:>16}: {best:.2f} s (best of {REPEATS})")
same = bool(np.array_equal(timings["vectorised"][1], timings["per-sample loop"][1]))
speedup = timings["per-sample loop"][0] / timings["vectorised"][0]
print(f"identical labels: {same}; speed-up {speedup:.1f}x")
save("idn_noise", {"device_kind": "cpu", "data": train.source, "n": len(train), "rate": 0.4, "seed": 1,
                   "seconds": {k: v[0] for k, v in timings.items()}, "speedup": speedup, "identical_labels": same})
