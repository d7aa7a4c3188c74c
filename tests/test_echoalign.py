"""EchoAlign: the refined sets of its variants, its threshold rules, and stages shared between them."""

import json

import numpy as np
import pytest
import torch

from lnlkit.data import hold_out, load_dataset
from lnlkit.methods import build_method
from lnlkit.methods.base import RunFacts
from lnlkit.methods.echoalign import VARIANTS, EchoAlign
from lnlkit.noise import make_noise
from lnlkit.stages import StageCache


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the generator's small convolutions run faster on one thread
    digits = load_dataset("digits")
    noisy = make_noise("idn", digits.train, rate=0.4, seed=1)
    train, reference = hold_out(digits.train.with_noisy_labels(noisy.noisy), 0.3, seed=1)
    facts = RunFacts(train=train, noise_rate=0.4, device=torch.device("cpu"), seed=1, reference=reference,
                     model="small_cnn")
    stages = StageCache(tmp_path_factory.mktemp("stages"))
    methods = {}
    for variant in VARIANTS:
        method = build_method("echoalign", variant=variant, **EchoAlign.example_options)
        method.prepare(facts, stages)
        methods[variant] = (method, method.training_set(train))
    yield train, stages, methods
    torch.set_num_threads(threads)


def test_the_paper_keeps_one_sample_per_image_and_the_most_similar_originals(prepared):
    train, _, methods = prepared
    method, refined = methods["echoalign"]
    keep = method.keep_original
    assert len(refined) == len(train) and np.array_equal(refined.noisy_labels, train.noisy_labels)
    assert keep.mean() == pytest.approx(0.6, abs=0.01)  # tau from the noise rate keeps 1 - 0.4
    assert np.array_equal(refined.inputs[keep], train.inputs[keep])
    assert np.array_equal(refined.inputs[~keep], method.edits[~keep])
    assert method.similarity[keep].min() >= method.similarity[~keep].max()
    measured = method.options()
    assert measured["coverage"] == pytest.approx(keep.mean()) and 0 <= measured["precision"] <= 1
    assert measured["tau"] == "noise_rate" and measured["tau_used"] == pytest.approx(method.tau)


def test_ablations_and_the_official_variant(prepared):
    train, _, methods = prepared
    keep = methods["echoalign"][0].keep_original
    _, every_edit = methods["modification_only"]
    assert np.array_equal(every_edit.inputs, methods["modification_only"][0].edits)
    _, originals = methods["echoselect_only"]
    assert len(originals) == keep.sum() and np.array_equal(originals.inputs, train.inputs[keep])
    official, both = methods["official"]
    assert len(both) == keep.sum() + len(train)
    weights = official.weights.numpy()
    assert weights[:keep.sum()].sum() == pytest.approx(weights[keep.sum():].sum())  # each group the same total


def test_the_variants_share_the_generator_edits_and_similarity(prepared):
    _, stages, _ = prepared
    assert not list(stages.folder.glob("*.parts"))  # the resumable chunks are gone once the stage is saved
    built = [r.name for r in stages.records if r.status == "built"]
    assert sorted(built) == ["echoalign-edits", "echoalign-generator", "echoalign-similarity",
                             "osa-proxy-estimator"]


def test_bad_options_are_refused():
    for bad in [{"variant": "both"}, {"tau": "median"}, {"tau": 2.0}, {"generator": "gan"}, {"strength": 0.0}]:
        with pytest.raises(ValueError):
            build_method("echoalign", **bad)


def test_samples_of_a_finished_run_come_from_its_cached_stages(tmp_path, fresh_cache, one_thread):
    from lnlkit.cli import main
    from lnlkit.methods.echoalign import edit_samples
    from lnlkit.run import experiment_data, run_experiment

    result = run_experiment(method="echoalign", dataset="digits", noise="idn", rate=0.4, seed=1, held_out=0.3,
                            method_options=dict(EchoAlign.example_options), config_overrides={"epochs": 1},
                            out_dir=tmp_path / "results", progress=False)
    assert main(["samples", str(result.path), "--per-group", "3"]) == 0
    out = result.path.parent / "samples" / f"{result.path.stem}.npz"
    with np.load(out, allow_pickle=False) as stored:  # plain arrays: nothing to unpickle
        samples = {k: stored[k] for k in stored.files}
    method = result.trainer.method
    train = experiment_data(dataset="digits", noise="idn", rate=0.4, noise_seed=1, held_out=0.3).train
    index = samples["index"]
    assert np.array_equal(samples["edit"], method.edits[index])
    assert np.array_equal(samples["original"], train.inputs[index])
    assert np.array_equal(samples["noisy"], train.noisy_labels[index])
    assert np.array_equal(samples["kept"], method.keep_original[index])
    right = samples["clean"] == samples["noisy"]
    assert right[:3].all() and not right[3:].any()  # three correctly labelled, then three mislabelled
    about = json.loads(str(samples["about"]))
    assert about["result_file"] == result.path.name
    assert [row["count"] for row in about["judge"]] == [int((train.labels == train.noisy_labels).sum()),
                                                         int((train.labels != train.noisy_labels).sum())]
    assert 0.15 < about["judge_test_accuracy"] <= 1  # above chance, after two epochs of the proxy
    # without the cached edits there is nothing to show: said, not rebuilt
    for stale in (fresh_cache / "stages").glob("echoalign-edits-*.pt"):
        stale.unlink()
    with pytest.raises(FileNotFoundError, match="not in the cache"):
        edit_samples(result.record)
