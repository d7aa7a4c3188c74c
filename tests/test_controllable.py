"""The generator trained here: zero-initialised control, per-image seeds, and it learns a class-conditional toy."""

import numpy as np
import pytest

from lnlkit.controllable import TrainedEditor, train_generator


pytestmark = pytest.mark.usefixtures("one_thread")


def _halves(n, seed):
    """8x8 grey images: class 0 bright in the top half, class 1 in the bottom half."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 8, 8, 1))
    for k, y in enumerate(labels):
        images[k, 4 * y:4 * y + 4] += 160
    return images.astype(np.uint8), labels


def _bright_half(images):
    top, bottom = images[:, :4].mean((1, 2, 3)), images[:, 4:].mean((1, 2, 3))
    return (bottom > top).astype(int)


def test_untrained_control_changes_nothing_and_edits_are_seeded_per_image():
    images, labels = _halves(64, 0)
    artefact = train_generator(images, labels, 2, base_epochs=1, control_epochs=0, widths=(8, 16), batch_size=32)
    with_control = TrainedEditor(artefact, strength=0.6, steps=4, seed=3, batch_size=5)
    edits = with_control.edit(images[:7], 1 - labels[:7])
    assert edits.shape == (7, 8, 8, 1) and edits.dtype == np.uint8
    # the ControlNet's outputs start at zero: with or without it, the same edits
    without = TrainedEditor(artefact, strength=0.6, steps=4, seed=3, control=False).edit(images[:7], 1 - labels[:7])
    np.testing.assert_array_equal(edits, without)
    np.testing.assert_array_equal(edits, with_control.edit(images[:7], 1 - labels[:7]))
    alone = with_control.edit(images[6:7], 1 - labels[6:7], first_index=6)  # in another batch
    assert np.abs(alone.astype(int) - edits[6:].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="uint8 images of shape"):
        with_control.edit(np.zeros((1, 4, 4, 1), np.uint8), [0])


def test_the_generator_learns_to_edit_toward_the_label():
    images, labels = _halves(256, 1)
    artefact = train_generator(images, labels, 2, base_epochs=60, control_epochs=5, widths=(16, 32), batch_size=64,
                               lr=2e-3)
    assert np.mean(artefact["base_loss"][-5:]) < 0.5 * artefact["base_loss"][0]
    test, test_labels = _halves(40, 2)
    editor = TrainedEditor(artefact, strength=1.0, steps=10, guidance_scale=2.0)
    toward_other = editor.edit(test, 1 - test_labels)
    assert np.mean(_bright_half(toward_other) == 1 - test_labels) >= 0.9
    assert np.mean(_bright_half(editor.edit(test, test_labels)) == test_labels) >= 0.9
