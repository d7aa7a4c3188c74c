import pandas as pd

from lnlkit.results import compare_with_papers, noise_label, paper_numbers


def test_paper_numbers_carry_citations():
    table = paper_numbers(dataset="cifar10", method="coteaching", noise="IDN-40%")
    assert len(table) == 1
    row = table.iloc[0]
    assert row.value == 73.41 and row.table == "Table 3" and row.paper.startswith("CausalNL")


def test_noise_label():
    assert noise_label({"noise": "idn", "rate": 0.4}) == "IDN-40%"
    assert noise_label({"noise": "human", "label_set": "worst", "rate": None}) == "CIFAR-N worst"


def test_compare_puts_ours_beside_papers():
    ours = pd.DataFrame([{"dataset": "cifar10", "noise": "IDN-40%", "method": "ce", "profile": "quick", "epochs": 40,
                          "model": "resnet18", "data_source": "CIFAR-10 JPEG mirror", "last10_mean": v}
                         for v in (60.0, 62.0)])
    table = compare_with_papers(ours, "cifar10")
    assert table.loc[0, "ours (last10_mean)"] == "61.00 ± 1.41"
    assert "62.45±0.86 (CausalNL" in table.loc[0, "papers"] and "JPEG" in table.loc[0, "our setting"]
