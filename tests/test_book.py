"""The published book's pieces: captioned tables, the staged notebooks, the generated intro,
and the configuration that makes the pages render offline."""

import json
import os

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from lnlkit import book
from lnlkit.report import Table, wrap


def test_table_renders_a_numbered_list_table_with_escaped_cells():
    frame = pd.DataFrame({"method": ["CE", "Co*teaching", "-x"], "accuracy (%)": [81.234, 79.5, 1.0]})
    table = Table(frame, "Accuracy with $\\beta$.", "tab-example")
    markdown = table._repr_markdown_()
    lines = markdown.splitlines()
    assert lines[0] == ":::{list-table} Accuracy with $\\beta$."
    assert ":header-rows: 1" in lines and ":name: tab-example" in lines
    assert lines[-1] == ":::"
    # one list item per cell: a header row and three body rows of two cells
    assert sum(line.startswith("* - ") for line in lines) == 4
    assert sum(line.startswith("  - ") for line in lines) == 4
    assert "  - 81.23" in lines  # floats with two decimals
    assert "* - Co\\*teaching" in lines  # markdown is escaped, not interpreted
    assert "* - \\-x" in lines  # a leading minus would start a nested list
    html = table._repr_html_()
    assert "<caption>Accuracy with $\\beta$.</caption>" in html and html.count("<tr>") == 4


def test_table_requires_a_note_for_empty_cells():
    frame = pd.DataFrame({"a": [1.0, np.nan]})
    with pytest.raises(ValueError, match="empty cells"):
        Table(frame, "Caption.", "tab-x")
    table = Table(frame, "Caption.", "tab-x", missing="not measured")
    assert "—" in table._repr_markdown_() and table.caption.endswith("(—: not measured.)")
    with pytest.raises(ValueError, match="empty"):
        Table(pd.DataFrame(), "Caption.", "tab-y")


def test_table_keeps_markdown_cells_when_asked():
    table = Table(pd.DataFrame({"symbol": ["$\\tau$"]}), "Symbols.", "tab-s", markdown=True)
    assert "* - $\\tau$" in table._repr_markdown_()


def test_wrap_keeps_lines_within_the_text_column():
    text = "word " * 60
    assert max(len(line) for line in wrap(text).splitlines()) <= 78
    assert wrap("a\nb") == "a\nb"  # paragraphs stay apart


def test_staged_notebook_hides_papermill_parameters(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("profile = 'cpu'", metadata={"tags": ["injected-parameters"]})]
    notebook.metadata["papermill"] = {"parameters": {"profile": "cpu"}}
    source, target = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(notebook, source)
    assert book._stage_notebook(source, target) == {"profile": "cpu"}
    staged = nbformat.read(target, as_version=4)
    assert staged.cells[0].metadata["tags"] == ["parameters"]  # the chapter's own cell stays visible
    assert "remove-cell" in staged.cells[1].metadata["tags"]


def test_chapter_status_follows_the_table_of_contents():
    status = book.chapter_status().splitlines()
    assert len(status) == len(book.PAPER_CHAPTERS)
    present = set(book.toc_files())
    for line, (paper, page) in zip(status, book.PAPER_CHAPTERS.items()):
        assert paper in line
        assert (f"{{doc}}`/{page}`" in line) == (page in present)
        assert ("coming" in line) == (page not in present)


def test_footer_names_commit_date_and_profile():
    footer = book.build_footer({"smoke"})
    assert "commit" in footer and "profile <code>smoke</code>" in footer


def test_book_configuration_renders_math_offline_and_numbers_tables():
    config = yaml.safe_load((book.ROOT / "_config.yml").read_text())
    sphinx = config["sphinx"]
    assert "sphinx-mathjax-offline" in sphinx["extra_extensions"]
    assert not sphinx["config"]["mathjax_path"].startswith("http")  # shipped with the book, no CDN
    assert "textmacros" in json.dumps(sphinx["config"]["mathjax3_config"])
    assert sphinx["config"]["nb_render_markdown_format"] == "myst"  # Table's list-table is parsed
    assert ["html", "text/markdown", 25] in sphinx["config"]["nb_mime_priority_overrides"]
    assert config["repository"]["url"].startswith("https://github.com/")
    toc = yaml.safe_load((book.ROOT / "_toc.yml").read_text())
    assert toc["parts"][0]["numbered"] is True


def test_parallel_chapters_share_the_cores_and_reject_bad_input(monkeypatch):
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    book._share_the_cores(1)  # what each worker does before its kernel starts
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    book._share_the_cores(1)  # a thread count the user chose is kept
    assert os.environ["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        book.execute_all(jobs=0)
    with pytest.raises(ValueError, match="no chapter named"):
        book.execute_all(chapters=["no_such_chapter"], jobs=2)
