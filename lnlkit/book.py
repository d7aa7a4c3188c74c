"""Execute the chapters headlessly and build the HTML book (``python -m lnlkit book``).

1. Each chapter in ``_toc.yml`` that is a notebook (``book/NAME.md`` with jupytext front
   matter) is converted with jupytext and executed by papermill with the ``profile``
   parameter (and any ``-p NAME VALUE``) into ``_build/notebooks/NAME.ipynb``.
2. The executed notebooks, plain pages and the book configuration are staged in
   ``_build/src`` and rendered by Jupyter Book with execution off, warnings as errors;
   the HTML lands in ``_build/html``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
NOTEBOOKS = BUILD / "notebooks"
STAGE = BUILD / "src"
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")


def toc_files() -> list[str]:
    """Files named in _toc.yml, in reading order (e.g. 'book/label_noise')."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def is_notebook(path: Path) -> bool:
    text = path.read_text()
    head = text.split("---")[1] if text.startswith("---") else ""
    return "jupytext:" in head and "kernelspec:" in head


def execute_chapter(name: str, parameters: dict | None = None, log=print) -> Path:
    """Run ``book/NAME.md`` with papermill; return the executed notebook.

    The chapters read and write result files in the checkout's ``results/`` (unless
    ``LNLKIT_RESULTS`` says otherwise), whatever the kernel's working directory.
    """
    import jupytext
    import papermill

    os.environ.setdefault("LNLKIT_RESULTS", str(ROOT / "results"))
    source = ROOT / "book" / f"{name}.md"
    NOTEBOOKS.mkdir(parents=True, exist_ok=True)
    converted = BUILD / "unexecuted" / f"{name}.ipynb"
    converted.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.read(source, fmt="md:myst"), converted)
    output = NOTEBOOKS / f"{name}.ipynb"
    tic = time.perf_counter()
    papermill.execute_notebook(str(converted), str(output), parameters=parameters or {}, kernel_name="python3",
                               cwd=str(ROOT / "book"), progress_bar=False, log_output=False)
    log(f"executed {name} in {time.perf_counter() - tic:.0f} s -> {output.relative_to(ROOT)}")
    return output


def execute_all(profile: str = "smoke", chapters=None, extra: dict | None = None, log=print) -> list[Path]:
    known = [Path(entry).name for entry in toc_files() if is_notebook(ROOT / f"{entry}.md")]
    if unknown := sorted(set(chapters or []) - set(known)):
        raise ValueError(f"no chapter named {unknown}; the chapters are {known}")
    done = []
    for entry in toc_files():
        name = Path(entry).name
        path = ROOT / f"{entry}.md"
        if chapters and name not in chapters:
            continue
        if is_notebook(path):
            done.append(execute_chapter(name, {"profile": profile, **(extra or {})}, log=log))
    return done


def build_html(log=print) -> Path:
    """Stage configuration, pages and executed notebooks; render with Jupyter Book (execution off)."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "book").mkdir(parents=True)
    for name in BOOK_FILES:
        shutil.copy(ROOT / name, STAGE / name)
    for entry in toc_files():
        source = ROOT / f"{entry}.md"
        if is_notebook(source):
            executed = NOTEBOOKS / f"{Path(entry).name}.ipynb"
            if not executed.exists():
                raise FileNotFoundError(f"{executed} is missing: execute the chapter first")
            shutil.copy(executed, STAGE / f"{entry}.ipynb")
        else:
            shutil.copy(source, STAGE / f"{entry}.md")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", str(STAGE), "--path-output", str(ROOT), "--all", "-W", "-n",
               "--keep-going"]
    subprocess.run(command, check=True)
    html = BUILD / "html"
    log(f"book built: {html / 'index.html'}")
    return html


def main(args) -> None:
    import yaml

    extra = {key: yaml.safe_load(value) for key, value in args.param or []}
    execute_all(args.profile, args.chapters, extra)
    if not args.execute_only:
        build_html()
