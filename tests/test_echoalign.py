"""EchoAlign: the refined sets of its variants, its threshold rules, and stages shared between them."""

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
