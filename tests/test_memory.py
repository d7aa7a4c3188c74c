"""lnlkit keeps freed memory on glibc: repeated large CPU tensors stop costing page faults."""

import os
import subprocess
import sys

import pytest

import lnlkit.memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# 24 tensors of 64 MB (16,384 pages), each written and freed; faults counted over the last 12,
# after the heap has grown to hold them
CHILD = """
import resource
import torch
import lnlkit
for step in range(24):
    if step == 12:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1.0)
print(lnlkit.memory.keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(env_extra: dict) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", lnlkit.memory.OPT_OUT)} | env_extra
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_freed_tensors_are_reused_instead_of_faulted_in_again():
    if not lnlkit.memory.keep_freed_memory():
        pytest.skip("not glibc")
    tuned, faults_tuned = page_faults({})
    plain, faults_plain = page_faults({lnlkit.memory.OPT_OUT: "default"})
    assert tuned and not plain
    assert faults_plain >= 12 * 16_384  # every tensor is a fresh mapping
    assert faults_tuned < 16_384  # the heap's pages, reused
