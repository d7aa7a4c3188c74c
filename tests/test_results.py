import json
import threading

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from lnlkit.report import paired_verdicts, paper_vs_ours, plot_seeds_beside_papers
from lnlkit.results import noise_label, paper_numbers, write_result
from lnlkit.stats import auroc, mean_ci, paired_difference, verdict


def test_paper_numbers_carry_citations():
    table = paper_numbers(dataset="cifar10", method="coteaching", noise="IDN-40%")
    assert len(table) == 1
    row = table.iloc[0]
    assert row.value == 73.41 and row.table == "Table 3" and row.paper.startswith("CausalNL")


def test_noise_label():
    assert noise_label({"noise": "idn", "rate": 0.4}) == "IDN-40%"
    assert noise_label({"noise": "human", "label_set": "worst", "rate": None}) == "CIFAR-N worst"


def test_paper_vs_ours_cites_table_row_column_and_labels_our_setting():
    ours = pd.DataFrame([{"dataset": "cifar10", "noise": "IDN-40%", "method": "ce", "profile": "quick", "epochs": 40,
                          "model": "resnet18", "data_source": "CIFAR-10 JPEG mirror", "last10_mean": v}
                         for v in (60.0, 62.0)])
    table = paper_vs_ours(ours, "cifar10")
    # two seeds: half-width t(0.975, 1) * sd / sqrt(2) = 12.706 * 1.414 / 1.414
    assert table.loc[0, "ours: last-10 mean (%)"] == "61.00 ± 12.71"
    assert "62.45 ± 0.86 (CausalNL" in table.loc[0, "paper (%)"]
    assert "Table 3, row ce, column IDN-40%" in table.loc[0, "paper (%)"]
    assert "profile quick" in table.loc[0, "our setting"] and "JPEG" in table.loc[0, "our setting"]
    # EchoAlign's Table 6 counts images, not accuracy: never set beside an accuracy
    assert len(paper_numbers(table="Table 6", method="echoalign", noise="IDN-50%")) == 2
    # rows by setting as first seen, then method and held-out fraction, whatever the file order
    mixed = pd.concat([ours.assign(noise="IDN-40%", method="ce", held_out=0.3), ours.assign(noise="IDN-20%"),
                       ours.assign(noise="IDN-40%", method="coteaching", held_out=0.0), ours])
    assert [(n, m) for n, m in paper_vs_ours(mixed, "cifar10")[["noise", "method"]].values] == [
        ("IDN-40%", "ce"), ("IDN-40%", "ce (trained on 70 %)"), ("IDN-40%", "coteaching"), ("IDN-20%", "ce")]
    echo = paper_vs_ours(ours.assign(method="echoalign", noise="IDN-50%"), "cifar10")
    assert "Table 5" in echo.loc[0, "paper (%)"] and "Table 6" not in echo.loc[0, "paper (%)"]


def test_the_seed_plot_joins_each_seeds_runs_and_marks_the_papers_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = pd.DataFrame([{"dataset": "cifar10", "noise": noise, "method": method, "seed": seed,
                          "final": base + gain + seed} for noise, base in [("IDN-20%", 80.0), ("IDN-40%", 70.0)]
                         for method, gain in [("ce", 0.0), ("coteaching", 5.0)] for seed in (1, 2)])
    fig = plot_seeds_beside_papers(ours, "cifar10", ["ce", "coteaching", "causalnl"])
    assert [ax.get_title() for ax in fig.axes] == ["IDN-20%", "IDN-40%"]
    idn40 = fig.axes[1]
    seeds = {line.get_label(): list(line.get_ydata()) for line in idn40.get_lines()
             if line.get_label().startswith("seed")}
    assert seeds == {"seed 1": [71.0, 76.0], "seed 2": [72.0, 77.0]}  # ce then coteaching, per seed
    paper = {line.get_label(): line.get_ydata()[0] for line in idn40.get_lines() if "Table" in line.get_label()}
    assert paper["CausalNL (Yao et al., NeurIPS 2021), Table 3"] in (62.45, 73.41)  # its CE and Co-teaching rows
    assert [t.get_text() for t in idn40.get_xticklabels()] == ["ce", "coteaching"]  # no causalnl runs: no column
    plt.close(fig)
    with pytest.raises(ValueError, match="no cifar10 runs"):
        plot_seeds_beside_papers(ours, "cifar10", ["mixup"])


def test_mean_ci_matches_the_t_interval():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    interval = mean_ci(values)
    low, high = scipy_stats.t.interval(0.95, 3, loc=values.mean(), scale=scipy_stats.sem(values))
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert mean_ci([3.0]).format() == "3.0" and mean_ci([3.0]).n == 1


def test_paired_difference_removes_the_shared_seed_effect_and_verdicts_follow_the_interval():
    seed_effect = {s: 10.0 * s for s in range(1, 6)}  # seeds differ a lot ...
    a = {s: v + 1.0 + 0.01 * s for s, v in seed_effect.items()}  # ... a beats b by ~1 on every seed
    b = dict(seed_effect)
    diff = paired_difference(a, b)
    assert diff.low > 0.9 and diff.high < 1.1
    assert verdict(diff, "A", "B").startswith("A is better than B")
    unpaired = mean_ci(list(a.values())).low < mean_ci(list(b.values())).high  # the intervals overlap
    assert unpaired
    tie = paired_difference({1: 1.0, 2: 2.0, 3: 0.0}, {1: 2.0, 2: 1.0, 3: 0.0})
    assert verdict(tie, "A", "B").startswith("no difference resolved")
    frame = pd.DataFrame([{"method": m, "seed": s, "acc": (a if m == "A" else b)[s]} for m in "AB" for s in a])
    table = paired_verdicts(frame, "method", "acc", [("A", "B")])
    assert table.loc[0, "seeds"] == 5 and table.loc[0, "verdict"].startswith("A is better")
    grouped = paired_verdicts(frame.assign(noise="idn"), "method", "acc", [("A", "B")], by=["noise"])
    assert grouped.loc[0, "noise"] == "idn" and grouped.loc[0, "seeds"] == 5
    # no pair present: an empty table that still has its columns, so chapters can filter it
    missing = paired_verdicts(frame.assign(noise="idn"), "method", "acc", [("A", "C")], by=["noise"])
    assert missing.empty and {"noise", "seeds", "verdict"} <= set(missing.columns)
    assert missing[missing["seeds"] >= 2].empty


def test_auroc_known_cases_and_mean_noise_rank_identity():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5
    rng = np.random.default_rng(0)
    scores, noisy = rng.random(200), rng.random(200) < 0.3
    n, k = len(noisy), noisy.sum()
    mnr = scipy_stats.rankdata(scores)[noisy].mean()  # rank 1 = least noisy-looking
    assert auroc(scores, noisy) == pytest.approx((mnr - (k + 1) / 2) / (n - k))


def test_concurrent_result_writes_are_never_torn(tmp_path):
    path = tmp_path / "r.json"
    errors, reads = [], []

    def writer(i):
        for j in range(40):
            try:
                write_result({"writer": i, "j": j, "payload": list(range(2000))}, path)
            except Exception as err:  # pragma: no cover - the failure this test looks for
                errors.append(err)

    def reader():
        for _ in range(200):
            if path.exists():
                reads.append(json.loads(path.read_text()))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(len(r["payload"]) == 2000 for r in reads)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind
