"""EchoAlign (Zheng, Han, Yin): edit each image toward its noisy label, keep the original where the
edit stayed close to it, and train on that refined set.

Three cached stages run before training:

1. ``echoalign-generator``: the generator trained here (:mod:`lnlkit.controllable`) on the
   run's clean held-out split (proxy external knowledge: the classifier never sees it). With
   ``generator="controlnet"`` the paper's Stable Diffusion 1.5 + ControlNet (weights from the
   local cache, :mod:`lnlkit.echomod`) and nothing to train;
2. ``echoalign-edits``: EchoMod, every training image edited toward its noisy label, saved in
   chunks as it goes (an interrupted run resumes where it stopped);
3. ``echoalign-similarity``: Eq. 1, the cosine between the features of each original and of
   its edit. ``encoder="proxy"``: the proxy estimator trained on the same clean split (the
   stage OSA uses); ``encoder="clip"``: open_clip ViT-B-32 with the official code's
   ``laion2b_s34b_b79k`` weights.

EchoSelect then keeps the original where similarity >= tau. ``tau="noise_rate"`` (default)
keeps the most similar 1 - rate of the originals, the rate being the run's nominal one (the
paper calibrates tau from a noise-rate estimate); a number sets tau; ``"oracle"`` uses the
clean labels (a reference, not the method). ``variant`` picks what is trained on:

- ``"echoalign"`` (the paper, Sec. 4.2): per image the original or its edit, N samples;
- ``"modification_only"`` and ``"echoselect_only"``: Table 5's ablations, every edit, or
  the kept originals alone;
- ``"official"``: the official code's first phase, the kept originals and all N edits, each
  group weighted inversely to its size (its 40 epochs of fine-tuning on the kept originals
  are a second run started from these weights).

The labels stay the noisy ones. The clean labels only measure the selection (precision,
coverage), recorded with the options.
"""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import torch

from ..data import LabelledData
from ..echoselect import (feature_similarity, group_weights, oracle_tau, refined_set, selection_quality,
                          tau_from_noise_rate)
from .base import Method

GENERATORS = ("trained", "controlnet")
ENCODERS = ("proxy", "clip")
VARIANTS = ("echoalign", "modification_only", "echoselect_only", "official")
OPENCLIP_WEIGHTS = "laion2b_s34b_b79k"  # the official code's EchoSelect encoder (open_clip ViT-B-32)


class EchoAlign(Method):
    """EchoMod + EchoSelect, then cross-entropy on the refined set.

    Parameters
    ----------
    generator : "trained" or "controlnet"
    base_epochs, control_epochs, widths : the trained generator's two phases and UNet widths.
    strength, guidance_scale, steps, control : how the trained generator edits
        (:class:`lnlkit.controllable.TrainedEditor`); the ControlNet pipeline uses the paper's
        settings (:class:`lnlkit.echomod.ControlNetEditor`).
    encoder : "proxy" or "clip"; proxy_epochs, proxy_model : the proxy's training.
    tau : "noise_rate", "oracle" or a number in [-1, 1].
    variant : "echoalign", "modification_only", "echoselect_only" or "official".
    seed : the generator's, the edits' and the proxy's seed.
    """

    name = "echoalign"
    example_options = {"base_epochs": 2, "control_epochs": 1, "widths": [8, 16], "steps": 2, "proxy_epochs": 2}
    example_held_out = 0.3

    def __init__(self, generator: str = "trained", base_epochs: int = 200, control_epochs: int = 100,
                 widths: list = (32, 64), strength: float = 0.8, guidance_scale: float = 2.0, steps: int = 20,
                 control: bool = True, encoder: str = "proxy", proxy_epochs: int = 30,
                 proxy_model: str = "small_cnn", tau="noise_rate", variant: str = "echoalign", seed: int = 0):
        for option, value, allowed in [("generator", generator, GENERATORS), ("encoder", encoder, ENCODERS),
                                       ("variant", variant, VARIANTS)]:
            if value not in allowed:
                raise ValueError(f"unknown {option} {value!r}; choose from {allowed}")
        if tau not in ("noise_rate", "oracle"):
            try:
                tau = float(tau)
            except (TypeError, ValueError):
                raise ValueError(f"tau must be 'noise_rate', 'oracle' or a number in [-1, 1], got {tau!r}") from None
            if not -1 <= tau <= 1:
                raise ValueError(f"tau must lie in [-1, 1] (a cosine), got {tau}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
        self.generator, self.base_epochs, self.control_epochs = generator, base_epochs, control_epochs
        self.widths = [int(w) for w in widths]
        self.strength, self.guidance_scale, self.steps, self.control = strength, guidance_scale, steps, control
        self.encoder, self.proxy_epochs, self.proxy_model = encoder, proxy_epochs, proxy_model
        self.tau_rule, self.variant, self.seed = tau, variant, seed
        self.measured: dict = {}

    # ------------------------------------------------------------ stages

    def _editor(self, facts, stages):
        if self.generator == "controlnet":
            from ..echomod import ControlNetEditor

            return ControlNetEditor(seed=self.seed, device=facts.device)
        from ..controllable import TrainedEditor, train_generator

        if facts.reference is None:
            raise ValueError("EchoAlign's generator trained here learns from a clean held-out split: run with "
                             "held_out=0.3 (command line: --held-out 0.3)")
        reference = facts.reference
        key = {"reference": reference.digest(noisy=False), "base_epochs": self.base_epochs,
               "control_epochs": self.control_epochs, "widths": self.widths, "seed": self.seed}
        artefact = stages.run("echoalign-generator", key, lambda: train_generator(
            reference.inputs, reference.labels, reference.num_classes, base_epochs=self.base_epochs,
            control_epochs=self.control_epochs, widths=self.widths, seed=self.seed, device=facts.device,
            progress=facts.progress))
        self.generator_loss = {"base": artefact["base_loss"], "control": artefact["control_loss"]}
        return TrainedEditor(artefact, strength=self.strength, steps=self.steps, guidance_scale=self.guidance_scale,
                             control=self.control, seed=self.seed, device=facts.device)

    def _edits(self, editor, facts, stages, key) -> np.ndarray:
        from ..echomod import edit_resumable

        # chunks beside the stage's file, so that an interrupted edit resumes
        parts = stages.folder / f"echoalign-edits-{stages.key('echoalign-edits', key)}.parts" \
            if stages.enabled else tempfile.mkdtemp(prefix="echoalign-edits-")

        def build():
            return {"edits": edit_resumable(editor, facts.train.inputs, facts.train.noisy_labels, facts.class_names,
                                            parts, progress=facts.progress)}

        edits = stages.run("echoalign-edits", key, build)["edits"].numpy()
        shutil.rmtree(parts, ignore_errors=True)  # the edits are complete (and saved, with a stage): drop the chunks
        return edits

    def _encoder(self, facts, stages):
        if self.encoder == "clip":
            from ..estimators import CLIPEstimator

            return CLIPEstimator.from_open_clip(facts.class_names, pretrained=OPENCLIP_WEIGHTS, device=facts.device)
        from ..estimators import cached_proxy_estimator

        return cached_proxy_estimator(facts, stages, self.proxy_model, self.proxy_epochs, self.seed)

    def feature_encoder(self):
        """EchoSelect's encoder (``encode_images``, ``class_embeddings``), built or loaded on first use:
        the chapter also judges the edits and measures the features with it."""
        if self._feature_encoder is None:
            self._feature_encoder = self._encoder(self._facts, self._stages)
        return self._feature_encoder

    def prepare(self, facts, stages) -> None:
        train = facts.train
        self._facts, self._stages, self._feature_encoder = facts, stages, None
        editor = self._editor(facts, stages)
        key = {"train": train.digest(), "editor": editor.settings()}
        edits = self._edits(editor, facts, stages, key)

        def similarity():
            encoder = self.feature_encoder()
            as_tensor = lambda images: torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # noqa: E731
            return {"similarity": feature_similarity(encoder.encode_images(as_tensor(train.inputs)).cpu().numpy(),
                                                     encoder.encode_images(as_tensor(edits)).cpu().numpy())}

        key |= {"encoder": self.encoder, "proxy_epochs": self.proxy_epochs, "proxy_model": self.proxy_model,
                "reference": facts.reference.digest(noisy=False) if facts.reference is not None else None}
        self.similarity = stages.run("echoalign-similarity", key, similarity)["similarity"].numpy()
        self.edits = edits

        # The oracle reads the clean labels: a reference to measure tau against, not the method.
        best_tau = oracle_tau(self.similarity, train.labels, train.noisy_labels)
        if self.tau_rule == "noise_rate":
            self.tau = tau_from_noise_rate(self.similarity, facts.noise_rate)
        else:
            self.tau = best_tau if self.tau_rule == "oracle" else float(self.tau_rule)
        self.keep_original = self.similarity >= self.tau
        # Measurement only: the selection judged with the clean labels.
        self.measured = {"tau_used": self.tau, "oracle_tau": best_tau,
                         **selection_quality(self.keep_original, train.labels, train.noisy_labels)}

    def training_set(self, train: LabelledData) -> LabelledData:
        keep, edits = self.keep_original, self.edits
        self.weights = None
        if self.variant == "echoselect_only":
            return train.subset(np.flatnonzero(keep))
        if self.variant == "official":  # the kept originals, then every edit, each group weighted
            kept_weights, edit_weights = group_weights(keep)
            self.weights = torch.from_numpy(np.concatenate([kept_weights, edit_weights])).float()
            both = np.concatenate([np.flatnonzero(keep), np.arange(len(train))])
            images = np.concatenate([train.inputs[keep], edits])
        else:  # the paper's refined set, or every edit
            images = refined_set(train.inputs, edits, self.similarity, self.tau)[0] \
                if self.variant == "echoalign" else edits
            both = np.arange(len(train))
        return LabelledData(images, train.labels[both], train.classes, train.name, train.source, dict(train.meta),
                            train.noisy_labels[both])

    def setup(self, trainer) -> None:
        super().setup(trainer)
        if self.weights is not None:
            self.weights = self.weights.to(trainer.device)

    def sample_weights(self, batch):
        return None if self.weights is None else self.weights[batch.indices]

    def options(self) -> dict:
        return {"generator": self.generator, "base_epochs": self.base_epochs, "control_epochs": self.control_epochs,
                "widths": self.widths, "strength": self.strength, "guidance_scale": self.guidance_scale,
                "steps": self.steps, "control": self.control, "encoder": self.encoder,
                "proxy_epochs": self.proxy_epochs, "proxy_model": self.proxy_model, "tau": self.tau_rule,
                "variant": self.variant, "seed": self.seed, **self.measured}


def edit_samples(record: dict, per_group: int = 6, seed: int = 0) -> dict:
    """What a finished EchoAlign run's edits look like, from its cached stages (generator-independent).

    Returns arrays for a figure (``per_group`` correctly labelled and ``per_group`` mislabelled
    training images, drawn with ``seed``: the original, its edit, both labels, the similarity and
    whether EchoSelect kept the original) and, over the whole training set, what a judge reads: the
    run's proxy encoder (trained on the clean held-out split, it never saw an edit) classifies every
    original and every edit; ``judge`` counts how often it reads the noisy label, apart for images
    whose label is right and wrong, and ``judge_test_accuracy`` is its accuracy on the clean test set.
    """
    from ..estimators import proxy_from_state
    from ..run import experiment_data
    from ..stages import recorded_artefact

    run, options = record["run"], record["method_options"]
    if run["method"] != "echoalign" or options.get("encoder") != "proxy":
        raise ValueError("edit samples need an EchoAlign result file whose encoder is the proxy (the judge)")
    data = experiment_data(dataset=run["dataset"], noise=run["noise"], rate=run["rate"],
                           label_set=run["label_set"], noise_seed=run["noise_seed"], held_out=run["held_out"],
                           val_fraction=record["train_config"]["val_fraction"])
    train = data.train
    edits = recorded_artefact(record, "echoalign-edits")["edits"].numpy()
    similarity = recorded_artefact(record, "echoalign-similarity")["similarity"].numpy()
    if len(edits) != len(train):
        raise ValueError(f"the cached edits ({len(edits)}) do not match the run's training split ({len(train)})")
    judge = proxy_from_state(recorded_artefact(record, "osa-proxy-estimator"))
    class_vectors = judge.class_embeddings()

    def reads(images):
        chw = torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2)))
        return (judge.encode_images(chw) @ class_vectors.T).argmax(1).cpu().numpy()

    clean, noisy = train.labels, train.noisy_labels
    read_original, read_edit = reads(train.inputs), reads(edits)
    mislabelled = clean != noisy
    counts = [{"labels": group, "count": int(mask.sum()),
               "original reads noisy label": float((read_original[mask] == noisy[mask]).mean()),
               "edit reads noisy label": float((read_edit[mask] == noisy[mask]).mean()),
               "edit reads clean label": float((read_edit[mask] == clean[mask]).mean()),
               "mean similarity": float(similarity[mask].mean())}
              for group, mask in [("right", ~mislabelled), ("wrong", mislabelled)]]
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.choice(np.flatnonzero(~mislabelled), per_group, replace=False),
                            rng.choice(np.flatnonzero(mislabelled), per_group, replace=False)])
    return {"index": picks, "original": train.inputs[picks], "edit": edits[picks], "clean": clean[picks],
            "noisy": noisy[picks], "similarity": similarity[picks], "read_edit": read_edit[picks],
            "kept": similarity[picks] >= options["tau_used"], "classes": np.array(train.classes), "judge": counts,
            "judge_test_accuracy": float((reads(data.test.inputs) == data.test.labels).mean())}
