"""EchoMod: Canny control, the paper's ControlNet pipeline (tiny random weights, offline), resumable editing."""

import time

import numpy as np
import pytest

from lnlkit.echomod import (ControlNetEditor, WeightsMissing, canny_edges, edit_resumable, load_controlnet_pipeline,
                            tiny_controlnet_pipeline)

CLASSES = ["airplane", "cat"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=3, size=32):
    rng = np.random.default_rng(0)
    images = np.zeros((n, size, size, 3), np.uint8)
    for k in range(n):  # a bright square at a different place in each image, on a noisy background
        images[k] = rng.integers(0, 40, (size, size, 3))
        images[k, 4 + 2 * k:20 + 2 * k, 6:22] = 220
    return images


def test_canny_edges_mark_the_outline_of_a_square_and_nothing_inside():
    edges = canny_edges(_square())
    assert edges.shape == (1, 32, 32) and edges.dtype == np.uint8 and set(np.unique(edges)) <= {0, 255}
    assert edges[0, 12:16, 12:16].max() == 0  # inside
    assert edges[0, 8:24, 7:9].max() == 255 and edges[0, 7:9, 8:24].max() == 255  # left and top sides
    assert np.array_equal(canny_edges(_square()[..., :1]), edges)  # a grey image: the same edges
    with pytest.raises(ValueError, match="uint8 images"):
        canny_edges(np.zeros((1, 8, 8), np.uint8))


def _square():
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 8:24, 8:24] = 255
    return image


@pytest.mark.parametrize("mode", ["text2image", "img2img"])
def test_tiny_controlnet_edits_are_seeded_per_image_whatever_the_batch(mode):
    pipeline = tiny_controlnet_pipeline(mode, prompts=[f"a photo of {c}" for c in CLASSES])
    editor = ControlNetEditor(pipeline, mode=mode, resolution=64, steps=2, batch_size=2, seed=5)
    images, labels = _images(3), np.array([0, 1, 1])
    edits = editor.edit(images, labels, CLASSES)
    assert edits.shape == images.shape and edits.dtype == np.uint8 and edits.std() > 0
    assert np.array_equal(edits, editor.edit(images, labels, CLASSES))  # same seed: same edits
    # image 2 alone, with its index: the same edit as inside the batch (up to rounding)
    alone = editor.edit(images[2:], labels[2:], CLASSES, first_index=2)
    assert np.abs(alone.astype(int) - edits[2:].astype(int)).max() <= 1
    other = ControlNetEditor(pipeline, mode=mode, resolution=64, steps=2, seed=6).edit(images, labels, CLASSES)
    assert not np.array_equal(other, edits)
    settings = editor.settings()
    assert settings["weights"] == "tiny, random" and settings["mode"] == mode and settings["steps"] == 2
    assert (settings["strength"] is None) == (mode == "text2image")


def test_edit_resumable_saves_chunks_and_resumes_without_editing_them_again(tmp_path):
    pipeline = tiny_controlnet_pipeline("img2img", prompts=[f"a photo of {c}" for c in CLASSES])
    editor = ControlNetEditor(pipeline, mode="img2img", resolution=64, steps=2)
    images, labels = _images(5), np.array([0, 1, 0, 1, 0])
    calls = []

    class Interrupted(Exception):
        pass

    class Counting:  # the editor, recording which chunks it edits; optionally stopped at one
        def __init__(self, stop_at=None):
            self.stop_at = stop_at

        def edit(self, images, labels, class_names, first_index=0):
            if first_index == self.stop_at:
                raise Interrupted
            calls.append(first_index)
            return editor.edit(images, labels, class_names, first_index)

    with pytest.raises(Interrupted):
        edit_resumable(Counting(stop_at=2), images, labels, CLASSES, tmp_path, chunk_size=2, progress=False)
    assert calls == [0]
    calls.clear()
    resumed = edit_resumable(Counting(), images, labels, CLASSES, tmp_path, chunk_size=2, progress=False)
    assert calls == [2, 4]  # the first chunk is loaded, not edited again
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == [
        "edits-0000000-0000002.npy", "edits-0000002-0000004.npy", "edits-0000004-0000005.npy"]
    np.testing.assert_array_equal(resumed, editor.edit(images, labels, CLASSES))


def test_missing_weights_say_what_to_download_within_seconds(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    tic = time.perf_counter()
    with pytest.raises(WeightsMissing) as error:
        load_controlnet_pipeline("someone/absent-sd15", "someone/absent-controlnet")
    assert time.perf_counter() - tic < 10
    assert "someone/absent-sd15" in str(error.value) and "huggingface-cli download" in str(error.value)


def test_text_to_image_edits_follow_the_edge_map_only_through_the_controlnet():
    import torch

    pipeline = tiny_controlnet_pipeline("text2image", prompts=[f"a photo of {c}" for c in CLASSES])
    controlnet = pipeline.controlnet
    with torch.no_grad():  # a ControlNet fresh from its UNet has zero convolutions in and out: fill them
        for zero_conv in [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks,
                          controlnet.controlnet_mid_block]:
            zero_conv.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    images, labels = _images(2), np.array([1, 1])

    def edit_both_with_one_seed(scale):  # the same seed for both images: only their edges differ
        editor = ControlNetEditor(pipeline, resolution=64, steps=2, control_scale=scale, seed=0)
        return np.concatenate([editor.edit(images[k:k + 1], labels[k:k + 1], CLASSES) for k in range(2)])

    controlled, uncontrolled = edit_both_with_one_seed(1.0), edit_both_with_one_seed(0.0)
    assert np.array_equal(uncontrolled[0], uncontrolled[1])
    assert not np.array_equal(controlled[0], controlled[1])
