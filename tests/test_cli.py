import json

import numpy as np

from lnlkit.cli import main


def test_noise_command_writes_npz(tmp_path, capsys):
    out = tmp_path / "digits.npz"
    assert main(["noise", "--dataset", "digits", "--kind", "pairflip", "--rate", "0.3", "--out", str(out)]) == 0
    with np.load(out) as z:
        assert {"noisy_labels", "clean_labels", "achieved_rate"} <= set(z.files)
        assert abs(float(z["achieved_rate"]) - 0.3) < 0.05
    assert "achieved rate" in capsys.readouterr().out


def test_cpu_bf16_flag_is_another_run_with_its_own_file(tmp_path):
    argv = ["run", "--method", "ce", "--dataset", "digits", "--noise", "symmetric", "--rate", "0.2", "--epochs", "1",
            "--device", "cpu", "--out-dir", str(tmp_path / "results")]
    assert main(argv) == 0 and main(argv + ["--cpu-bf16"]) == 0
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "results").glob("*.json"))]
    assert sorted(r["train_config"]["cpu_bf16"] for r in records) == [False, True]


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["noise", "--dataset", "digits", "--kind", "symmetric", "--rate", "1.5", "--out",
                 str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_run_command_writes_result_with_provenance(tmp_path):
    assert main(["run", "--method", "coteaching", "--dataset", "digits", "--noise", "symmetric", "--rate", "0.2",
                 "--epochs", "2", "--out-dir", str(tmp_path / "results")]) == 0
    (path,) = (tmp_path / "results").glob("*.json")
    record = json.loads(path.read_text())
    assert path.name.startswith("digits-symmetric20-coteaching-smoke-noise1-seed1-")
    assert len(record["history"]) == 2 and record["method_options"]["rate"] == 0.2
    assert {"git_commit", "lnlkit_version", "torch_version"} <= set(record["provenance"])
    assert record["data_source"].startswith("scikit-learn digits")
    assert 0 <= record["final"]["test_acc_last10_mean"] <= 1
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_run_command_passes_method_options(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", "--method", "causalnl", "--dataset", "moons", "--noise", "idn", "--rate", "0.45",
                 "--epochs", "2", "--option", "official_code", "true", "--out-dir", str(out)]) == 0
    (path,) = out.glob("moons-idn45-causalnl-smoke-noise1-seed1-*.json")
    record = json.loads(path.read_text())
    assert record["method_options"]["official_code"] is True and record["method_options"]["reconstruction"] == "mse"
    assert record["train_config"]["schedule"] == "constant"  # CausalNL's own recipe: Adam 1e-3 without decay
    assert main(["run", "--method", "causalnl", "--dataset", "moons", "--noise", "idn", "--rate", "0.45",
                 "--option", "no_such_option", "1", "--out-dir", str(out)]) == 2
    assert "no option" in capsys.readouterr().err


def test_osa_run_twice_loads_its_stage_from_the_cache(tmp_path, fresh_cache, capsys):
    command = ["run", "--method", "osa", "--dataset", "digits", "--noise", "idn", "--rate", "0.4", "--held-out", "0.3",
               "--option", "estimator", "proxy", "--epochs", "2", "--out-dir", str(tmp_path / "results")]
    assert main(command) == 0
    (path,) = (tmp_path / "results").glob("*.json")
    first = json.loads(path.read_text())
    assert [(s["name"], s["status"]) for s in first["stages"]] == [("osa-proxy-estimator", "built"),
                                                                    ("osa-scores", "built")]
    assert main(command) == 0
    second = json.loads(path.read_text())
    assert [(s["name"], s["status"]) for s in second["stages"]] == [("osa-scores", "loaded")]
    assert second["stages"][0]["key"] == first["stages"][1]["key"]
    assert second["final"] == first["final"]
    assert "stage osa-scores: loaded" in capsys.readouterr().out


def test_seeds_are_separate_on_the_command_line(tmp_path):
    out = tmp_path / "results"
    for seed in ("1", "2"):
        assert main(["run", "--method", "ce", "--dataset", "digits", "--noise", "symmetric", "--rate", "0.2",
                     "--noise-seed", "7", "--seed", seed, "--epochs", "1", "--out-dir", str(out)]) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert [(r["run"]["noise_seed"], r["run"]["seed"]) for r in records] == [(7, 1), (7, 2)]
    assert records[0]["noise"]["seed"] == 7


def test_a_chapter_name_typo_is_refused(capsys):
    assert main(["book", "--chapters", "labelnoise", "--execute-only"]) == 2
    assert "label_noise" in capsys.readouterr().err
