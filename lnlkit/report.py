"""What the chapters share: figure style, captioned tables, mean ± CI tables over seeds, paired
verdicts, paper-vs-ours tables.

Each chapter imports these instead of repeating the cells; every table follows one protocol:
the mean over seeds ± the half-width of a 95 % Student-t interval, the number of seeds, and
the setting (profile, network, epochs, data source) beside each of our numbers.
"""

from __future__ import annotations

import html
import re
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .results import paper_numbers
from .stats import mean_ci, paired_difference, verdict

FIGURE_STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
                "axes.titlesize": 10, "legend.fontsize": 8}


def use_figure_style() -> None:
    """The book's matplotlib style (call once per chapter)."""
    plt.rcParams.update(FIGURE_STYLE)


def wrap(text: str, width: int = 78) -> str:
    """Prose for a cell's printed output, wrapped to the book's text column."""
    return "\n".join(textwrap.fill(part, width, subsequent_indent="  ") for part in str(text).split("\n"))


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|{}$])")


class Table:
    """A table with a numbered caption: a MyST ``list-table`` in the book, an HTML table in Jupyter.

    ``name`` is the label the text cites with ``{numref}`name```. Cells are shown as text
    (floats with ``digits`` decimals); an empty cell (NaN/None) is shown as "—" and must be
    explained by ``missing``, which is appended to the caption. With ``markdown=True`` the
    cells are MyST markdown (math, code) instead of literal text.
    """

    def __init__(self, frame: pd.DataFrame, caption: str, name: str, *, missing: str | None = None,
                 digits: int = 2, index: bool = False, markdown: bool = False):
        frame = frame.reset_index() if index else frame
        if frame.empty:
            raise ValueError(f"table {name!r} is empty")
        empty = frame.isna().to_numpy().any()
        if empty and not missing:
            raise ValueError(f"table {name!r} has empty cells: say why with missing=...")
        self.name, self.digits, self.markdown = name, digits, markdown
        self.caption = caption + (f" (—: {missing}.)" if empty else "")
        # multi-level columns ("last-10 mean", "ce") read as "last-10 mean, ce"
        self.columns = [", ".join(str(part) for part in c if str(part)) if isinstance(c, tuple) else str(c)
                        for c in frame.columns]
        self.rows = [[self._cell(v) for v in row] for row in frame.itertuples(index=False)]

    def _cell(self, value) -> str:
        if value is None or (np.isscalar(value) and pd.isna(value)):
            return "—"
        if isinstance(value, (float, np.floating)):
            return f"{value:.{self.digits}f}"
        return " ".join(str(value).split())

    def _repr_markdown_(self) -> str:
        def escape(text):
            if not self.markdown:
                text = re.sub(r"^([-+])", r"\\\1", _MARKDOWN_SPECIAL.sub(r"\\\1", text))
            return text or " "

        # a colon fence: the caption may hold backticks, which a backtick fence's info string cannot
        lines = [f":::{{list-table}} {self.caption}", ":header-rows: 1", f":name: {self.name}", ""]
        for row in [self.columns, *self.rows]:
            lines += [f"{'*' if i == 0 else ' '} - {escape(cell)}" for i, cell in enumerate(row)]
        return "\n".join(lines + [":::"])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        return (f"<table><caption>{html.escape(self.caption)}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        frame = pd.DataFrame(self.rows, columns=self.columns)
        return f"{self.caption}\n{frame.to_string(index=False)}"


def mean_ci_table(frame: pd.DataFrame, rows, columns, value: str, digits: int = 1) -> pd.DataFrame:
    """Pivot ``value`` into 'mean ± half-width' cells (95 % CI over the rows of each cell, e.g. seeds)."""
    return frame.pivot_table(index=rows, columns=columns, values=value, sort=False,
                             aggfunc=lambda v: mean_ci(v).format(digits))


def paired_verdicts(frame: pd.DataFrame, method_col: str, value: str, pairs, by=None, key="seed") -> pd.DataFrame:
    """For each (a, b) in ``pairs`` (and each group of ``by``): the paired difference a - b over ``key``, a verdict."""
    by_columns = [by] if isinstance(by, str) else list(by or [])
    groups = frame.groupby(by, sort=False) if by else [((), frame)]
    rows = []
    for group, part in groups:
        per = {m: dict(zip(p[key], p[value])) for m, p in part.groupby(method_col)}
        for a, b in pairs:
            if a in per and b in per:
                diff = paired_difference(per[a], per[b])
                rows.append({**dict(zip(by_columns, group if isinstance(group, tuple) else (group,))),
                             "comparison": f"{a} − {b}", "difference": diff.format(1), "low": diff.low,
                             "high": diff.high, "seeds": diff.n, "verdict": verdict(diff, a, b),
                             "conclusion": verdict(diff, a, b, detail=False)})
    # the same columns when no pair is found, so callers can filter an empty table
    return pd.DataFrame(rows, columns=[*by_columns, "comparison", "difference", "low", "high", "seeds", "verdict",
                                       "conclusion"])


def citation(row) -> str:
    """'CausalNL (Yao et al., NeurIPS 2021), Table 3, row CE, column IDN-40%'."""
    return f"{row['paper']}, {row['table']}, row {row['method']}, column {row['noise']}"


METRIC_NAMES = {"last10_mean": "last-10 mean", "final": "final epoch", "at_min_val_loss": "at min. noisy-val loss",
                "oracle_best": "oracle best epoch"}


def paper_vs_ours(ours: pd.DataFrame, dataset: str, metric: str | list = "last10_mean") -> pd.DataFrame:
    """Our mean ± 95 % CI over seeds beside each paper's number for the same method and noise, with citations.

    ``ours`` is :func:`lnlkit.results.results_frame` output; ``metric`` one of its accuracy
    columns, or a list of them (one column each). Each row names our setting (profile, network,
    epochs, data source) so a reader sees what differs from the paper's.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if ours.empty:
        return pd.DataFrame()
    ours = ours[ours["dataset"] == dataset]
    ours = ours.assign(held_out=ours["held_out"].fillna(0.0) if "held_out" in ours else 0.0)
    keys = ["noise", "method", "held_out", "profile", "epochs", "model", "data_source"]
    # settings in the order they first appear (file names run IDN-20 %, IDN-40 %, worst), and within
    # one setting by method and held-out fraction, whatever order the files were written in
    setting_order = {noise: i for i, noise in enumerate(ours["noise"].unique())}
    ours = ours.sort_values(["noise", "method", "held_out"], kind="stable",
                            key=lambda column: column.map(setting_order) if column.name == "noise" else column)
    rows = []
    for values, part in ours.groupby(keys, sort=False):
        setting = dict(zip(keys, values))
        papers = paper_numbers(dataset=dataset, method=setting["method"], noise=setting["noise"], unit="%")
        cited = [f"{p['value']:.2f}" + (f" ± {p['sd']:.2f}" if pd.notna(p.get("sd")) else "") +
                 f" ({citation(p)}; {p['metric']})" for _, p in papers.iterrows()]
        trained_on = f" (trained on {100 * (1 - setting['held_out']):.0f} %)" if setting["held_out"] else ""
        rows.append({"noise": setting["noise"], "method": setting["method"] + trained_on,
                     **{f"ours: {METRIC_NAMES.get(m, m)} (%)": mean_ci(part[m]).format(2) if part[m].notna().any()
                        else None for m in metrics},  # e.g. no validation split: no model selection
                     "seeds": len(part), "paper (%)": "; ".join(cited) or "—",
                     "our setting": f"profile {setting['profile']}, {setting['model']}, {setting['epochs']} epochs, "
                                    f"{setting['data_source']}"})
    return pd.DataFrame(rows)


PAPER_MARKERS = "DvP^"


def plot_seeds_beside_papers(ours: pd.DataFrame, dataset: str, methods: list[str], metric: str = "final",
                             method_col: str = "method", column_width: float = 0.9):
    """One panel per setting (noise): each seed's accuracy per method, the mean ± 95 % CI, and the papers.

    A line joins one seed's runs across methods (same noisy labels, same training seed): the
    pairs the verdicts are computed from, so a gap that every line shows is visible at a
    glance. Hollow markers are the papers' numbers for the same method and noise, one shape
    per paper. ``ours`` is :func:`lnlkit.results.results_frame` output (or any frame with dataset,
    noise, seed, ``metric`` and ``method_col``, whose values name the columns); returns the figure.
    """
    ours = ours[(ours["dataset"] == dataset) & ours[method_col].isin(methods)]
    if ours.empty:
        raise ValueError(f"no {dataset} runs of {methods} to plot")
    settings = list(dict.fromkeys(ours["noise"]))
    # each panel as wide as its number of methods
    columns = {s: [m for m in methods if m in set(ours.loc[ours["noise"] == s, method_col])] for s in settings}
    widths = [len(present) for present in columns.values()]
    fig, axes = plt.subplots(1, len(settings), figsize=(0.8 + column_width * sum(widths), 3.2), sharey=True,
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    papers_seen = {}
    for ax, setting in zip(axes[0], settings):
        part = ours[ours["noise"] == setting]
        present = columns[setting]
        x = {m: i for i, m in enumerate(present)}
        for seed, runs in part.groupby("seed"):
            runs = runs.set_index(method_col).loc[[m for m in present if m in set(runs[method_col])]]
            ax.plot([x[m] for m in runs.index], runs[metric], "o-", ms=4, lw=0.8, alpha=0.7,
                    color=f"C{(seed - 1) % 10}", label=f"seed {seed}")
        for m in present:
            interval = mean_ci(part.loc[part[method_col] == m, metric])
            ax.errorbar(x[m] + 0.18, interval.mean, yerr=None if interval.n < 2 else interval.half_width,
                        fmt="s", ms=4, color="black", capsize=3, label="mean ± 95 % CI")
            for _, paper in paper_numbers(dataset=dataset, method=m, noise=setting, unit="%").iterrows():
                source = f"{paper['paper']}, {paper['table']}"
                marker = PAPER_MARKERS[papers_seen.setdefault(source, len(papers_seen)) % len(PAPER_MARKERS)]
                ax.plot(x[m] - 0.18, paper["value"], marker, mfc="none", color="0.35", ms=6, label=source)
        ax.set_xticks(range(len(present)), [textwrap.fill(m, 16) for m in present], fontsize=7)
        ax.set_xlim(-0.5, len(present) - 0.5)
        ax.set_title(setting)
    axes[0][0].set_ylabel(f"test accuracy (%), {METRIC_NAMES.get(metric, metric)}")
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.tight_layout()
    # below the panels (the book's figures are saved with a tight bounding box)
    fig.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.02),
               ncol=min(len(handles), 3), fontsize=7, frameon=False)
    return fig
