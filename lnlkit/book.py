"""Execute the chapters headlessly and build the HTML book (``python -m lnlkit book``).

1. Each chapter in ``_toc.yml`` that is a notebook (``book/NAME.md`` with jupytext front
   matter) is converted with jupytext and executed by papermill with the ``profile``
   parameter (and any ``-p NAME VALUE``) into ``_build/notebooks/NAME.ipynb``.
2. The executed notebooks, plain pages and the book configuration are staged in
   ``_build/src`` (papermill's injected-parameters cells hidden, the footer set to the
   build's commit, date and profile) and rendered by Jupyter Book with execution off,
   warnings as errors; the HTML lands in ``_build/html``.
3. ``publish`` pushes ``_build/html`` to the ``gh-pages`` branch (GitHub Pages).
"""

from __future__ import annotations

import os
import re
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


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _share_the_cores(threads: int) -> None:
    """In a worker process, before any kernel starts: each kernel inherits this thread count."""
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(threads))


def execute_all(profile: str = "smoke", chapters=None, extra: dict | None = None, jobs: int = 1,
                log=print) -> list[Path]:
    """Execute the chapters (all, or those named) in reading order, or ``jobs`` at a time.

    With ``jobs > 1`` each chapter runs in a worker process whose kernel gets an equal share of
    the cores (``OMP_NUM_THREADS``, unless already set). On two cores this gains little: a
    second thread already speeds a ``smoke`` chapter up about 1.5×, and two chapters side by
    side finished only 1.09× sooner (``benchmarks/book_execution.py``), so the default is one
    at a time. Results and caches are written atomically, so chapters that train the same run
    at once do not clash.
    """
    known = [Path(entry).name for entry in toc_files() if is_notebook(ROOT / f"{entry}.md")]
    if unknown := sorted(set(chapters or []) - set(known)):
        raise ValueError(f"no chapter named {unknown}; the chapters are {known}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    names = [name for name in known if not chapters or name in chapters]
    parameters = {"profile": profile, **(extra or {})}
    if jobs == 1 or len(names) == 1:
        return [execute_chapter(name, parameters, log=log) for name in names]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    log(f"executing {len(names)} chapters, {jobs} at a time, {threads} thread(s) each")
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_share_the_cores, initargs=(threads,)) as pool:
        futures = [pool.submit(execute_chapter, name, parameters) for name in names]
        return [future.result() for future in futures]


# The four papers of the book and the page each one gets (a chapter exists once it is in _toc.yml).
PAPER_CHAPTERS = {"OSA": "book/osa", "CausalNL": "book/causalnl", "DTM": "book/dtm", "EchoAlign": "book/echoalign"}


def chapter_status() -> str:
    """Markdown for the introduction: which papers have a chapter in _toc.yml, and which are coming."""
    present = set(toc_files())
    lines = [f"- **{paper}**: {{doc}}`/{page}`" if page in present else f"- **{paper}**: chapter coming"
             for paper, page in PAPER_CHAPTERS.items()]
    return "\n".join(lines)


def _stage_notebook(executed: Path, target: Path) -> dict:
    """Copy an executed notebook for rendering: papermill's injected-parameters cell is removed
    from the page (the chapter's own parameters cell stays). Returns papermill's parameters."""
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(notebook, target)
    return notebook.metadata.get("papermill", {}).get("parameters", {})


def build_footer(profiles: set[str]) -> str:
    """The footer line: the commit, the date and the profile(s) the chapters were executed with."""
    from .results import git_commit

    commit = git_commit()
    short = commit[:12] + (" (with uncommitted changes)" if "uncommitted" in commit else "")
    date = time.strftime("%Y-%m-%d", time.gmtime())
    return (f"Built on {date} from commit <code>{short}</code>; chapters executed with profile "
            f"<code>{', '.join(sorted(profiles)) or 'none'}</code>.")


def build_html(log=print) -> Path:
    """Stage configuration, pages and executed notebooks; render with Jupyter Book (execution off)."""
    import yaml

    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "book").mkdir(parents=True)
    for name in BOOK_FILES:
        shutil.copy(ROOT / name, STAGE / name)
    shutil.copytree(ROOT / "book" / "_static", STAGE / "_static")  # the book's CSS
    profiles = set()
    for entry in toc_files():
        source = ROOT / f"{entry}.md"
        if is_notebook(source):
            executed = NOTEBOOKS / f"{Path(entry).name}.ipynb"
            if not executed.exists():
                raise FileNotFoundError(f"{executed} is missing: execute the chapter first")
            profiles.add(str(_stage_notebook(executed, STAGE / f"{entry}.ipynb").get("profile", "smoke")))
        else:
            shutil.copy(source, STAGE / f"{entry}.md")
    config = yaml.safe_load((STAGE / "_config.yml").read_text())
    config.setdefault("html", {})["extra_footer"] = build_footer(profiles)
    config.setdefault("parse", {}).setdefault("myst_substitutions", {})["chapter_status"] = chapter_status()
    (STAGE / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", str(STAGE), "--path-output", str(ROOT), "--all", "-W", "-n",
               "--keep-going"]
    subprocess.run(command, check=True)
    html = BUILD / "html"
    log(f"book built: {html / 'index.html'}")
    return html


# Runs in each page after MathJax has typeset it: what a reader would find cut off or unrendered.
_INSPECT_SCRIPT = """<script>
window.addEventListener('load', () => setTimeout(async () => {
  if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
  const wide = (el) => el.scrollWidth > el.clientWidth + 1;
  const head = (el) => el.textContent.trim().slice(0, 60);
  const cutCode = [...document.querySelectorAll('.cell_input pre')].filter(wide);
  const cutOutputs = [...document.querySelectorAll('.cell_output pre')].filter(wide);
  const cutTables = [...document.querySelectorAll('table')].filter(t =>
    t.getBoundingClientRect().width > document.querySelector('article, main').getBoundingClientRect().width + 1
    || (t.parentElement && wide(t.parentElement)));
  const cutEquations = [...document.querySelectorAll('mjx-container[display="true"]')].filter(m => {
    const math = m.querySelector('mjx-math');
    return math && math.getBoundingClientRect().width > m.getBoundingClientRect().width + 1; });
  const report = {
    code_cells_cut: cutCode.length,
    outputs_cut: cutOutputs.length,
    equations_cut: cutEquations.length,
    tables_cut: cutTables.map(t => (t.querySelector('caption') || t).textContent.trim().slice(0, 50)),
    cut: [...cutCode, ...cutOutputs].map(head),
    cut_equations: cutEquations.map(m => (m.closest('[id]') || {}).id || '?'),
    raw_tex: [...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container')).length,
    equations: document.querySelectorAll('mjx-container').length,
    figures: document.querySelectorAll('figure').length,
    numbered_captions: document.querySelectorAll('.caption-number').length,
    stderr_outputs: document.querySelectorAll('.output.stderr').length,
  };
  document.body.setAttribute('data-inspect', JSON.stringify(report));
}, 500));
</script>"""


def inspect_pages(html: Path = BUILD / "html", width: int = 1280, screenshots: Path | None = None,
                  log=print) -> dict:
    """Open every page of the built book in headless Chromium (offline, ``width`` pixels wide)
    and count what a reader would meet: code, outputs, tables and equations wider than the
    text column (the first two and the equations named), math left as raw TeX, figures and
    numbered captions, stderr outputs. Saves a full-page screenshot of each page to ``screenshots`` if given.
    Needs ``chromium`` (or ``chromium-browser``) on the PATH.
    """
    import json

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise FileNotFoundError("inspecting the pages needs Chromium: install `chromium` (e.g. apt install chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
             f"--window-size={width},1000"]
    html, reports = Path(html).resolve(), {}
    for page in sorted(html.glob("*.html")) + sorted(html.glob("book/*.html")):
        if page.name in ("genindex.html", "search.html", "index.html"):
            continue
        probe = page.with_name(f".inspect-{page.name}")
        probe.write_text(page.read_text().replace("</body>", _INSPECT_SCRIPT + "</body>"))
        try:
            dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                                 timeout=120).stdout
        finally:
            probe.unlink()
        found = re.search(r'data-inspect="([^"]*)"', dom)
        reports[str(page.relative_to(html))] = (json.loads(found.group(1).replace("&quot;", '"'))
                                                if found else {"error": "the page did not finish loading"})
        if screenshots:
            screenshots.mkdir(parents=True, exist_ok=True)
            shot = screenshots / f"{page.stem}.png"
            subprocess.run([*flags[:-1], f"--window-size={width},6000", f"--screenshot={shot}", page.as_uri()],
                           capture_output=True, timeout=120)
        log(f"{page.relative_to(html)}: {reports[str(page.relative_to(html))]}")
    return reports


def publish(html: Path = BUILD / "html", remote: str = "origin", log=print) -> None:
    """Push the built HTML to the ``gh-pages`` branch of ``remote`` with ghp-import (GitHub Pages).

    ``-n`` adds .nojekyll (Sphinx's ``_static`` folders start with an underscore); ``-f``
    replaces the branch's history, as the branch only ever holds the latest build.
    """
    if not (html / "index.html").exists():
        raise FileNotFoundError(f"{html / 'index.html'} is missing: build the book first (make book)")
    ghp_import = Path(sys.executable).parent / "ghp-import"
    subprocess.run([str(ghp_import), "-n", "-p", "-f", "-r", remote, str(html)], check=True, cwd=ROOT)
    log(f"published {html} to the gh-pages branch of {remote}")


def main(args) -> None:
    import yaml

    if args.publish:
        publish()
        return
    if args.inspect:
        inspect_pages(screenshots=BUILD / "screenshots")
        return
    if not args.render_only:
        extra = {key: yaml.safe_load(value) for key, value in args.param or []}
        execute_all(args.profile, args.chapters, extra, jobs=args.jobs)
    if not args.execute_only:
        build_html()
