"""Sweeps: grids and named tables, skipping finished runs, refusing bad specs early, and submitit's path."""

import json

import pytest

from lnlkit.cli import main
from lnlkit.sweep import RunSpec, grid, sweep, sweep_progress, sweep_summary, table_specs

MOONS = dict(methods=["ce"], dataset="moons", settings=[("symmetric", 0.2, None)], profile="smoke")


def test_grid_runs_the_first_seed_of_every_cell_first():
    specs = grid(methods=["ce", "coteaching"], dataset="cifar10", settings=[("idn", 0.2, None), ("idn", 0.4, None)],
                 seeds=[1, 2], profile="cpu", method_options={"coteaching": {"rate": 0.3}})
    assert [(s.seed, s.rate, s.method) for s in specs[:4]] == [(1, 0.2, "ce"), (1, 0.2, "coteaching"),
                                                               (1, 0.4, "ce"), (1, 0.4, "coteaching")]
    assert specs[1].options == (("rate", 0.3),) and specs[0].options == ()
    assert specs[1].label == "coteaching rate=0.3 · cifar10 idn-20% · cpu · seed 1"
    with pytest.raises(ValueError, match="unknown method"):
        grid(methods=["nope"], dataset="digits", settings=[("idn", 0.2, None)], seeds=[1], profile="smoke")


def test_campaign_table_pairs_osa_with_ce_on_the_same_images():
    specs = table_specs("campaign")
    assert len(specs) == 3 * 3 * 5  # seeds x settings x (ce, coteaching, causalnl, osa, ce on 70 %)
    assert {s.profile for s in specs} == {"cpu"} and specs[0].seed == 1 and specs[-1].seed == 3
    osa = [s for s in specs if s.method == "osa"]
    assert all(s.held_out == 0.3 and dict(s.options)["estimator"] == "proxy" for s in osa)
    assert sum(s.method == "ce" and s.held_out == 0.3 for s in specs) == len(osa)
    assert {s.label_set for s in specs if s.noise == "human"} == {"worst"}
    assert {s.setting for s in specs} == {"cifar10 idn-20%", "cifar10 idn-40%", "cifar10 worst"}
    assert {s.method_label for s in specs if s.method == "ce"} == {"ce", "ce held-out 0.3"}
    with pytest.raises(ValueError, match="unknown table"):
        table_specs("table-99")


def test_echoalign_campaign_has_both_ce_controls_on_the_same_split():
    specs = table_specs("echoalign-campaign", seeds=[1])
    by_run = {(s.method, dict(s.options).get("clean_reference", "unused")): s for s in specs}
    assert set(by_run) == {("echoalign", "unused"), ("ce", "unused"), ("ce", "only")}
    assert {s.held_out for s in specs} == {0.3}  # one clean 30 %: the generator's, and the control's data
    echo = dict(by_run["echoalign", "unused"].options)
    assert (echo["base_epochs"], echo["control_epochs"], echo["proxy_model"]) == (10, 5, "compact_resnet")
    assert dict(by_run["ce", "unused"].options) == {}


def test_sweep_skips_finished_runs_and_summarises(tmp_path, fresh_cache):
    out = tmp_path / "results"
    specs = grid(seeds=[1, 2], **MOONS)
    lines = []
    first = sweep(specs, out_dir=out, echo=lines.append)
    assert len(first.finished) == 2 and not first.skipped and not first.failed
    assert len(list(out.glob("*.json"))) == 2 and any(line.startswith("[2/2] done") for line in lines)
    again = sweep(specs + grid(seeds=[3], **MOONS), out_dir=out, echo=lines.append)
    assert len(again.skipped) == 2 and len(again.finished) == 1  # only seed 3 ran
    summary = sweep_summary(specs + grid(seeds=[3], **MOONS), out)
    assert "moons" in summary and " 3 " in summary  # one cell, three seeds
    progress = sweep_progress(grid(seeds=[1, 3, 4], **MOONS), out)
    assert progress["done"].tolist() == [True, True, False]  # seed 4 never ran
    on_file = {p.name for p in out.glob("*.json")}
    assert set(progress["file"][:2]) <= on_file and progress["file"][2] not in on_file
    assert set(progress["setting"]) == {"moons symmetric-20%"} and set(progress["method"]) == {"ce"}


def test_a_bad_spec_is_refused_before_any_run(tmp_path, fresh_cache):
    good = grid(seeds=[1], **MOONS)[0]
    bad = RunSpec("coteaching", "moons", "symmetric", 0.2, options=(("no_such_option", 1),))
    with pytest.raises(ValueError, match="no_such_option"):
        sweep([good, bad], out_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_dry_run_lists_what_remains(tmp_path, fresh_cache):
    lines = []
    report = sweep(grid(seeds=[1, 2], **MOONS), out_dir=tmp_path, dry_run=True, echo=lines.append)
    assert not report.finished and sum("to run:" in line for line in lines) == 2
    assert not list(tmp_path.glob("*.json"))


def test_submitit_local_executor_runs_the_jobs(tmp_path, fresh_cache):
    out = tmp_path / "results"
    report = sweep(grid(seeds=[1], **MOONS), out_dir=out, executor="submitit-local", logs=tmp_path / "logs",
                   time_min=10, echo=lambda line: None)
    assert not report.failed, report.failed
    (path,) = out.glob("*.json")
    assert json.loads(path.read_text())["run"]["dataset"] == "moons"
    assert any((tmp_path / "logs").iterdir())  # submitit's job folder with its logs


def test_local_workers_share_the_cores(tmp_path, fresh_cache):
    out = tmp_path / "results"
    report = sweep(grid(seeds=[1, 2], **MOONS), out_dir=out, workers=2, echo=lambda line: None)
    assert len(report.finished) == 2 and len(list(out.glob("*.json"))) == 2


def test_sweep_command(tmp_path, fresh_cache, capsys):
    args = ["sweep", "--methods", "ce", "--dataset", "moons", "--noise", "symmetric", "--rates", "0.2",
            "--seeds", "1", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 run(s) finished" in out and "mean ± 95 % CI" in out
    assert main(args) == 0 and "1 skipped" in capsys.readouterr().out
    assert main(["sweep", "--table", "campaign", "--dry-run", "--out-dir", str(tmp_path)]) == 0
    assert "45 to run" in capsys.readouterr().out
    assert main(["sweep", "--methods", "ce", "--noise", "idn"]) == 2  # no rates: refused with a message
    assert "--rates" in capsys.readouterr().err
