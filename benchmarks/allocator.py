"""PyTorch on CPU: glibc as it comes, glibc as ``import lnlkit`` sets it, and jemalloc.

With glibc as it comes, every large tensor (above 32 MB, glibc's largest mmap threshold) is a
fresh mapping that the kernel fills page by page and takes back when the tensor is freed, so a
CPU run can spend more time in page faults than in arithmetic. ``import lnlkit`` turns those
mappings off and keeps a freed heap top below 1 GiB (``lnlkit/memory.py``), so freed pages are
reused. jemalloc with ``dirty_decay_ms:-1,muzzy_decay_ms:-1``, preloaded, is the other known
fix; it never returns freed memory (a chapter kernel that trained many models grew to 23 GB),
and it is measured here only when installed (``apt-get install libjemalloc2``). Every
workload runs in child processes, the same code and seed, once per allocator:

1. EchoMod: the generator trained here (random weights) edits 128 CIFAR-sized images;
2. training: one epoch of the ``cpu`` profile's CE (compact residual network, batch 512) on
   10,000 CIFAR-10 images (random images of the same shape when CIFAR-10 is absent).

Run with `python benchmarks/allocator.py`.
"""

import os
import subprocess
import sys
from pathlib import Path

from common import save

from lnlkit.memory import OPT_OUT

JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
CANDIDATES = ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
              "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2"]

WORKLOADS = {
    "EchoMod, 128 CIFAR-sized edits": """
import numpy as np
from lnlkit.controllable import TrainedEditor, train_generator
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 10, 128)
editor = TrainedEditor(train_generator(images[:2], labels[:2], 10, base_epochs=0, control_epochs=0))
editor.edit(images[:2], labels[:2])
tic = time.perf_counter()
editor.edit(images, labels)
""",
    "CE, one cpu-profile epoch on 10,000 CIFAR-10 images": """
from common import cifar10_train
from lnlkit.methods import build_method
from lnlkit.profiles import train_config
from lnlkit.trainer import Trainer
full = cifar10_train()
train = full.subset(np.arange(10_000)).with_noisy_labels(full.labels[:10_000])
test = full.subset(np.arange(10_000, 11_000))
config = train_config("cpu", "cifar10", "ce", epochs=1, progress=False, seed=1)
trainer = Trainer(build_method("ce"), train, test, config)
tic = time.perf_counter()
trainer.fit()
""",
}

CHILD = """
import resource, sys, time
import numpy as np
sys.path.insert(0, {benchmarks!r})
{body}
seconds = time.perf_counter() - tic
usage = resource.getrusage(resource.RUSAGE_SELF)
print("RESULT", seconds, usage.ru_minflt, usage.ru_stime)
"""


def run(body: str, allocator: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", "MALLOC_CONF", OPT_OUT)}
    if allocator != "lnlkit":  # glibc as it comes; jemalloc must not be tuned through glibc either
        env[OPT_OUT] = "default"
    if allocator == "jemalloc":
        env |= {"LD_PRELOAD": jemalloc, "MALLOC_CONF": JEMALLOC_CONF}
    code = CHILD.format(benchmarks=str(Path(__file__).resolve().parent), body=body)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    seconds, faults, system = line.split()[1:]
    return {"seconds": float(seconds), "minor_page_faults": int(faults), "system_cpu_s": float(system)}


jemalloc = next((path for path in CANDIDATES if Path(path).exists()), None)
allocators = ["glibc", "lnlkit"] + (["jemalloc"] if jemalloc else [])
rows = []
for name, body in WORKLOADS.items():
    row = {"workload": name} | {allocator: run(body, allocator) for allocator in allocators}
    row["speed-up"] = {allocator: row["glibc"]["seconds"] / row[allocator]["seconds"] for allocator in allocators[1:]}
    rows.append(row)
    print(name + ": " + ", ".join(f"{allocator} {row[allocator]['seconds']:.1f} s "
                                  f"({row[allocator]['minor_page_faults']:,} page faults)" for allocator in allocators))

save("allocator", {"device_kind": "cpu", "glibc_settings": "import lnlkit: M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB",
                   "jemalloc": jemalloc, "malloc_conf": JEMALLOC_CONF,
                   "threads": os.environ.get("OMP_NUM_THREADS", "default"), "rows": rows})
