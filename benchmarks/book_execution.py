"""Executing the chapters: one after another with all cores, against ``--jobs 2`` (two at a time).

``make chapters`` executes every chapter in the ``smoke`` profile, most of CI's time. Their
models are small (8×8 digits, two moons), and such models use a second thread poorly, so two
chapters side by side, one thread each, may finish sooner than the same chapters one after the
other with two threads each. Both configurations run here on the same chapters, in child
processes (``python -m lnlkit book --execute-only``), each with a fresh, empty cache so that
neither loads a run the other trained. Both write the executed notebooks to
``_build/notebooks/``, as ``make chapters`` does.

Run with ``python benchmarks/book_execution.py [--chapters label_noise osa]`` (default: all).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import save

from lnlkit.book import THREAD_VARIABLES  # noqa: E402  (common puts the checkout on the path)

ROOT = Path(__file__).resolve().parent.parent


def execute(chapters: list[str], jobs: int) -> dict:
    """Wall time of executing ``chapters`` with ``--jobs jobs``, and each chapter's own time."""
    with tempfile.TemporaryDirectory() as cache:
        env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
        env["LNLKIT_CACHE"] = cache
        command = [sys.executable, "-m", "lnlkit", "book", "--profile", "smoke", "--execute-only",
                   "--jobs", str(jobs), "--chapters", *chapters]
        tic = time.perf_counter()
        out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - tic
    if out.returncode:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    each = {name: float(s) for name, s in re.findall(r"executed (\w+) in (\d+) s", out.stdout)}
    print(f"--jobs {jobs}: {seconds:.0f} s ({', '.join(f'{n} {s:.0f} s' for n, s in each.items())})")
    return {"jobs": jobs, "wall_s": seconds, "chapter_s": each}


def main() -> None:
    from lnlkit.book import is_notebook, toc_files

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", nargs="*",
                        default=[Path(e).name for e in toc_files() if is_notebook(ROOT / f"{e}.md")])
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    sequential = execute(args.chapters, jobs=1)
    parallel = execute(args.chapters, jobs=2)
    speedup = sequential["wall_s"] / parallel["wall_s"]
    print(f"{cores} cores: one after another {sequential['wall_s']:.0f} s, two at a time {parallel['wall_s']:.0f} s "
          f"({speedup:.2f}×)")
    save("book_execution", {"device_kind": "cpu", "cores": cores, "chapters": args.chapters,
                            "runs": [sequential, parallel], "speedup": speedup})


if __name__ == "__main__":
    main()
