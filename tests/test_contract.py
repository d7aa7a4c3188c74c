"""The contract every entry of METHODS keeps (a method added later gets these tests for free).

Each method, with its ``example_options`` on noisy digits in the smoke profile: builds; takes
one finite training step; two seeded runs are identical; a run interrupted and resumed equals
an uninterrupted one without rebuilding its stages; its options are plain JSON; its result
file passes :func:`lnlkit.results.check_record`.
"""

import json

import numpy as np
import pytest
import torch

from lnlkit.methods import METHODS, Method, build_method
from lnlkit.results import check_record
from lnlkit.run import run_experiment
from lnlkit.trainer import Trainer

EPOCHS = 3
SKIP = {"epoch_time_s"}  # wall-clock time differs from run to run


def _run(name, epochs=EPOCHS, **kwargs):
    method = METHODS[name]
    return run_experiment(method=name, dataset="digits", noise="idn", rate=0.4, seed=1, profile="smoke",
                          held_out=method.example_held_out, method_options=dict(method.example_options),
                          config_overrides={"epochs": epochs}, progress=False, **kwargs)


def _history(result):
    return [{k: v for k, v in h.items() if k not in SKIP} for h in result.history]


@pytest.fixture(params=sorted(METHODS))
def name(request, fresh_cache):
    return request.param


def test_builds_and_takes_a_finite_step(name):
    method = build_method(name, **METHODS[name].example_options)
    assert method.name == name
    result = _run(name, epochs=1, save=False)
    loss = result.history[0]["train_loss"]
    assert np.isfinite(loss) and loss > 0
    assert all(torch.isfinite(p).all() for net in result.networks for p in net.parameters())


def test_seeded_runs_are_identical_and_options_are_json(name):
    a, b = _run(name, save=False), _run(name, save=False)
    assert _history(a) == _history(b)
    options = a.method.options()
    assert json.loads(json.dumps(options)) == options  # plain JSON values, nothing lost
    # A method that estimates T(x) has it scored against the true IDN rows in its record.
    estimates = type(a.method).transition_estimate is not Method.transition_estimate
    assert (a.record["transition"] is not None) == estimates
    if estimates:
        scores = a.record["transition"]["scores"]
        assert 0 <= scores["estimate"]["tv"] <= 1 and scores["identity"]["tv"] > scores["class_oracle"]["tv"]


def test_interrupted_run_resumes_to_the_same_result_without_rebuilding_stages(name, tmp_path, monkeypatch):
    straight = _run(name, save=False)
    original = Trainer.train_epoch

    def crash_at_epoch_two(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", crash_at_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _run(name, out_dir=tmp_path / "results")
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = _run(name, out_dir=tmp_path / "results")
    assert _history(resumed) == _history(straight)
    assert all(stage["status"] == "loaded" for stage in resumed.record["stages"])
    record = json.loads(resumed.path.read_text())
    check_record(record)
    assert record["run"]["noise_seed"] == 1 and record["run"]["seed"] == 1
    assert not any((tmp_path / "checkpoints").glob("*.pt"))  # the result file replaced the checkpoint
