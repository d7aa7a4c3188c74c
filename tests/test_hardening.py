"""Bad inputs and faults, tried as a careless user, a flaky disk and a second process would.

Each probe asserts the exit code (2: a mistake in the command, 1: a fault outside the user's
control, 130: interrupted), that the message names the problem, and that no file was lost or
torn. No probe may end in a traceback (without --debug) or be silently accepted.
"""

import errno
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lnlkit import data
from lnlkit.cli import main
from lnlkit.methods import build_method
from lnlkit.results import load_results, results_dir
from lnlkit.trainer import Trainer

DIGITS_RUN = ["run", "--method", "coteaching", "--dataset", "digits", "--noise", "idn", "--rate", "0.4"]


def _cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err.strip(), out.out


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize("value, expected", [("False", False), ("false", False), ("true", True), ("1", True)])
def test_boolean_options_mean_what_they_say(value, expected):
    assert build_method("causalnl", official_code=value).official_code is expected


@pytest.mark.parametrize("option, value, needle", [("official_code", "maybe", "true or false"),
                                                   ("ramp_epochs", "abc", "an integer"),
                                                   ("ramp_epochs", "0", "at least 1"),
                                                   ("ramp_epochs", "2.5", "an integer")])
def test_bad_option_values_are_refused_before_anything_is_written(option, value, needle, results, capsys):
    method = "causalnl" if option == "official_code" else "coteaching"
    argv = ["run", "--method", method, "--dataset", "digits", "--noise", "idn", "--rate", "0.4", "--epochs", "1",
            "--option", option, value, "--out-dir", str(results)]
    code, err, _ = _cli(argv, capsys)
    assert code == 2 and option in err and needle in err
    assert _files(results.parent) == []


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_bad_epochs_are_refused_and_keep_an_earlier_result(epochs, results, capsys):
    assert main(DIGITS_RUN + ["--epochs", "1", "--out-dir", str(results)]) == 0
    (good,) = results.glob("*.json")
    before = good.read_bytes()
    code, err, _ = _cli(DIGITS_RUN + ["--epochs", epochs, "--out-dir", str(results)], capsys)
    assert code == 2 and "epochs" in err
    assert [p.name for p in results.glob("*.json")] == [good.name] and good.read_bytes() == before


def test_runs_that_differ_in_epochs_or_options_never_overwrite_each_other(results):
    for extra in ([], ["--epochs", "2"], ["--option", "ramp_epochs", "2"]):
        assert main(DIGITS_RUN + ["--epochs", "1"] + extra + ["--out-dir", str(results)]) == 0
    records = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert len(records) == 3
    assert sorted((r["train_config"]["epochs"], r["method_options"]["ramp_epochs"]) for r in records) == \
        [(1, 2), (1, 10), (2, 10)]


def test_a_checkpoint_made_with_other_method_options_is_refused(tmp_path):
    splits = data.load_digits()
    from lnlkit.noise import make_noise
    from lnlkit.profiles import train_config

    train = splits.train.with_noisy_labels(make_noise("idn", splits.train, 0.4, seed=1).noisy)
    config = train_config("smoke", "digits", epochs=3, progress=False)
    checkpoint = tmp_path / "run.pt"
    Trainer(build_method("coteaching", ramp_epochs=2), train, splits.test, config,
            checkpoint_path=checkpoint).fit(until_epoch=1)
    with pytest.raises(ValueError, match=str(checkpoint)):
        Trainer(build_method("coteaching"), train, splits.test, config, checkpoint_path=checkpoint).fit()


def _archive(path: Path, images: int) -> Path:
    """A CIFAR-10-shaped JPEG archive with only ``images`` images."""
    from PIL import Image

    with tarfile.open(path, "w:gz") as tar:
        labels = json.dumps({"classes": list("abcdefghij"), "train_labels": [0] * 50000,
                             "test_labels": [0] * 10000}).encode()
        info = tarfile.TarInfo("cifar10/labels.json")
        info.size = len(labels)
        tar.addfile(info, io.BytesIO(labels))
        for i in range(images):
            buffer = io.BytesIO()
            Image.fromarray(np.full((32, 32, 3), i, np.uint8)).save(buffer, format="JPEG")
            info = tarfile.TarInfo(f"cifar10/train/{i:05d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
    return path


@pytest.mark.parametrize("kind", ["incomplete", "random bytes", "truncated"])
def test_a_damaged_archive_is_refused_and_never_cached(kind, tmp_path, monkeypatch, capsys):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    archive = root / data.CIFAR10_JPEG_ARCHIVE
    if kind == "incomplete":
        _archive(archive, 20)
    elif kind == "random bytes":
        archive.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        _archive(tmp_path / "full.tar.gz", 200)
        archive.write_bytes((tmp_path / "full.tar.gz").read_bytes()[:3000])
    monkeypatch.setenv("LNLKIT_DATA", str(root))
    monkeypatch.setenv("LNLKIT_CACHE", str(cache))
    # Even an archive with the right checksum but missing images must not be decoded into blanks.
    monkeypatch.setattr(data, "CIFAR10_JPEG_SHA256", data._sha256(archive))
    code, err, _ = _cli(["noise", "--dataset", "cifar10", "--kind", "symmetric", "--rate", "0.2", "--out",
                         str(tmp_path / "x.npz")], capsys)
    assert code == 1 and str(archive) in err and "copy it again" in err
    assert not list(cache.glob("cifar10-jpeg-*.npz")) and not (tmp_path / "x.npz").exists()


def test_an_archive_that_is_not_the_published_one_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    _archive(root / data.CIFAR10_JPEG_ARCHIVE, 3)
    monkeypatch.setenv("LNLKIT_DATA", str(root))
    monkeypatch.setenv("LNLKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.DataUnavailableError, match="sha256"):
        data.load_cifar("cifar10", download=False)


def test_a_damaged_cifar_n_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "CIFAR-10_human.pt").write_bytes(b"not the published file")
    monkeypatch.setenv("LNLKIT_DATA", str(tmp_path))
    with pytest.raises(data.DataUnavailableError, match="CIFAR-10_human.pt.*download it again"):
        data.load_cifar_n("worst", download=False)


def test_a_truncated_decode_cache_is_rebuilt(shared_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("LNLKIT_CACHE", str(cache))
    stale = cache / f"cifar10-jpeg-{data.CIFAR10_JPEG_SHA256[:12]}.npz"
    stale.write_bytes(b"PK\x03\x04 torn")
    splits = data.load_cifar("cifar10", download=False)
    assert splits.train.inputs.shape == (50000, 32, 32, 3) and splits.train.inputs[-1].any()
    assert stale.stat().st_size > 100_000_000


@pytest.mark.parametrize("argv, needle", [
    (["noise", "--dataset", "cifar10", "--kind", "human", "--label-set", "worst", "--rate", "0.3"], "--rate"),
    (["noise", "--dataset", "digits", "--kind", "idn", "--label-set", "worst", "--rate", "0.3"], "--label-set"),
    (["noise", "--dataset", "digits", "--kind", "idn"], "--rate"),
    (["book", "--chapters", "labelnoise", "--execute-only"], "label_noise"),
])
def test_ignored_or_misspelt_arguments_are_refused(argv, needle, tmp_path, capsys):
    code, err, _ = _cli(argv + (["--out", str(tmp_path / "x.npz")] if argv[0] == "noise" else []), capsys)
    assert code == 2 and needle in err and not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------- errors a user can act on


def test_noise_out_into_a_missing_folder_creates_it(tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "labels.npz"
    code, _, printed = _cli(["noise", "--dataset", "digits", "--kind", "pairflip", "--rate", "0.2", "--out",
                             str(out)], capsys)
    assert code == 0 and out.exists() and "achieved rate" in printed
    assert _files(out.parent) == ["labels.npz"]  # written atomically: no temporary file left


def test_noise_out_onto_a_folder_is_refused(tmp_path, capsys):
    code, err, _ = _cli(["noise", "--dataset", "digits", "--kind", "pairflip", "--rate", "0.2", "--out",
                         str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err


@pytest.mark.parametrize("device, needle", [("tpu", "tpu"), ("cuda", "no CUDA GPU"), ("banana:3", "banana")])
def test_unusable_devices_are_refused_before_work(device, needle, results, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, err, _ = _cli(DIGITS_RUN + ["--device", device, "--out-dir", str(results)], capsys)
    assert code == 2 and needle in err and _files(results.parent) == []


def test_an_unwritable_results_folder_is_reported_before_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = []
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: started.append(1))
    code, err, _ = _cli(DIGITS_RUN + ["--out-dir", str(blocker / "results")], capsys)
    assert code == 2 and "results folder" in err and "--out-dir" in err and not started


def test_a_full_disk_leaves_the_previous_result_and_no_temporary_file(results, capsys, monkeypatch):
    assert main(DIGITS_RUN + ["--epochs", "1", "--out-dir", str(results)]) == 0
    (path,) = results.glob("*.json")
    before = path.read_bytes()

    def full(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    code, err, _ = _cli(DIGITS_RUN + ["--epochs", "1", "--out-dir", str(results)], capsys)
    assert code == 1 and "disk is full" in err and "free some space" in err
    assert path.read_bytes() == before and _files(results) == [path.name]


def test_ctrl_c_says_how_to_resume_and_the_rerun_resumes(results, capsys, monkeypatch):
    original = Trainer.train_epoch

    def interrupt_in_epoch_two(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupt_in_epoch_two)
    code, err, _ = _cli(DIGITS_RUN + ["--epochs", "3", "--out-dir", str(results)], capsys)
    assert code == 130 and "run the same command again" in err and "1 finished epoch" in err
    (checkpoint,) = (results.parent / "checkpoints").glob("*.pt")
    assert checkpoint.name in err
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert main(DIGITS_RUN + ["--epochs", "3", "--out-dir", str(results)]) == 0
    (path,) = results.glob("*.json")
    assert len(json.loads(path.read_text())["history"]) == 3


def test_a_truncated_checkpoint_is_named_with_what_to_do(results, capsys, monkeypatch):
    original = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch",
                        lambda self, epoch: (_ for _ in ()).throw(KeyboardInterrupt) if epoch == 1
                        else original(self, epoch))
    main(DIGITS_RUN + ["--epochs", "3", "--out-dir", str(results)])
    monkeypatch.setattr(Trainer, "train_epoch", original)
    (checkpoint,) = (results.parent / "checkpoints").glob("*.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    capsys.readouterr()
    code, err, _ = _cli(DIGITS_RUN + ["--epochs", "3", "--out-dir", str(results)], capsys)
    assert code == 2 and str(checkpoint) in err and "delete it" in err


def test_broken_or_foreign_json_in_the_results_folder_is_skipped_by_name(tmp_path):
    (tmp_path / "torn.json").write_text('{"run": {"method": ')
    (tmp_path / "other.json").write_text('{"something": "else"}')
    with pytest.warns(UserWarning) as caught:
        assert load_results(tmp_path) == []
    messages = " ".join(str(w.message) for w in caught)
    assert "torn.json" in messages and "other.json" in messages


@pytest.mark.parametrize("flags, needle", [(["--seed", "-1"], "--seed"), (["--noise-seed", str(2**32)], "--noise-seed"),
                                           (["--seed", str(2**40)], "--seed")])
def test_seeds_out_of_range_name_their_flag(flags, needle, results, capsys):
    code, err, _ = _cli(DIGITS_RUN + flags + ["--out-dir", str(results)], capsys)
    assert code == 2 and needle in err and "4294967295" in err and _files(results.parent) == []


def test_a_seed_that_is_not_an_integer_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(DIGITS_RUN + ["--seed", "1e23"])
    assert exit_.value.code == 2 and "--seed" in capsys.readouterr().err


def test_clip_without_weights_fails_within_seconds(results, capsys, monkeypatch):
    import lnlkit.estimators as estimators

    monkeypatch.setattr(estimators, "_cached_hub_file", lambda repo: None)
    monkeypatch.delenv("LNLKIT_CLIP_WEIGHTS", raising=False)
    tic = time.perf_counter()
    code, err, _ = _cli(["run", "--method", "osa", "--dataset", "digits", "--noise", "idn", "--rate", "0.4",
                         "--out-dir", str(results)], capsys)
    assert code == 1 and "LNLKIT_CLIP_WEIGHTS" in err and time.perf_counter() - tic < 20


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="epochs"):
        main(["--debug"] + DIGITS_RUN + ["--epochs", "0"])


# ---------------------------------------------------------------- files and concurrency


def test_results_default_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("LNLKIT_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert results_dir() == tmp_path / "results"
    monkeypatch.setenv("LNLKIT_RESULTS", str(tmp_path / "elsewhere"))
    assert results_dir() == tmp_path / "elsewhere"


def test_processes_writing_one_result_file_at_once_never_collide_or_tear(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "shared.json"
    writer = ("import sys; from lnlkit.results import write_result\n"
              "for j in range(60): write_result({'writer': int(sys.argv[1]), 'j': j, 'payload': list(range(3000))}, "
              f"{str(path)!r})\n")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(i)], stderr=subprocess.PIPE) for i in range(3)]
    torn, reads = 0, 0
    while any(p.poll() is None for p in procs):
        if path.exists():
            reads += 1
            try:
                assert len(json.loads(path.read_text())["payload"]) == 3000
            except (json.JSONDecodeError, AssertionError):
                torn += 1
    errors = [p.stderr.read().decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert torn == 0 and reads > 0
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_an_unwritable_cache_folder_is_reported_before_any_work(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LNLKIT_CACHE", str(blocker / "cache"))
    code, err, _ = _cli(DIGITS_RUN + ["--out-dir", str(tmp_path / "results")], capsys)
    assert code == 2 and "cache" in err and "LNLKIT_CACHE" in err
