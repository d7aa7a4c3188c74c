"""Estimators: an image encoder and a class encoder that map into one shared space.

OSA (and EchoAlign's selection) score a pair (image x, class y) by the cosine of their
embeddings (OSA Eq. 3). An estimator provides

- ``encode_images(images)``: unit-length embeddings of uint8 (N, C, H, W) images;
- ``class_embeddings()``: unit-length embeddings of the data set's classes, one row per class;
- ``random_images(n, kind, generator)`` and ``random_classes(n, kind, generator)``: embeddings
  of random inputs, from which OSA measures the space shift beta (its Eq. 4).

Two kinds exist:

- :class:`CLIPEstimator` wraps an open_clip model (the paper's CLIP ViT-B/32 with OpenAI
  weights) and embeds class names through a prompt;
- :class:`EmbeddingEstimator` pairs any image encoder with a table of class embeddings, e.g.
  the proxy that :func:`train_proxy_estimator` trains on a held-out clean split when no
  pretrained weights are at hand ("proxy external knowledge").
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DataUnavailableError, LabelledData

CLIP_PROMPT = "This is a picture of {}"  # the class name in a prompt
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# How CLIP sees the images. "tensor": a batched float bicubic resize on the device and bf16 on
# GPU (fast); "official": OSA's released code, a PIL bicubic resize of each 8-bit image (the
# result rounded to 8 bits again) and CLIP in fp16.
CLIP_PREPROCESSING = ("tensor", "official")


def pil_bicubic(images: torch.Tensor, size: tuple) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, C, *size) in [0, 1], resized one by one with PIL's bicubic
    filter on 8-bit images, as open_clip's preprocessing does."""
    from PIL import Image

    height, width = size
    resized = []
    for image in images.cpu().numpy():
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        array = np.asarray(pil.resize((width, height), Image.BICUBIC))
        resized.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(resized)).float() / 255.0


def _batched(fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def random_pixels(shape: tuple, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random images for the space shift: ``uniform`` U[0,1) pixels, or ``gaussian`` N(0, 1)."""
    if kind == "uniform":
        return torch.rand(shape, generator=generator)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator)
    raise ValueError(f"random image kind must be 'uniform' or 'gaussian', got {kind!r}")


class Estimator:
    """The interface OSA needs; subclasses fill in the encoders and random inputs."""

    device = torch.device("cpu")
    batch_size = 1024
    default_random_classes = "gaussian"  # the kind of random "text" OSA's space shift uses

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def class_embeddings(self) -> torch.Tensor:
        raise NotImplementedError

    def random_images(self, n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def random_classes(self, n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def pair_similarity(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """s(x, y) of OSA Eq. 3 for each image and its (noisy) label, batched."""
        classes = self.class_embeddings()
        image_emb = _batched(lambda x: self.encode_images(x.to(self.device)), images, self.batch_size)
        return (image_emb * classes[labels.to(self.device)]).sum(1).float()


# ---------------------------------------------------------------- CLIP through open_clip


def clip_weights_hint(model_name: str, pretrained: str) -> str:
    return (f"CLIP weights {model_name}/{pretrained} could not be loaded (no internet, and no local copy). "
            "Download them once where there is internet, e.g. python -c \"import open_clip; "
            f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\" (they land in the "
            "Hugging Face cache, ~/.cache/huggingface), or save the checkpoint file and point "
            "LNLKIT_CLIP_WEIGHTS at it.")


class CLIPEstimator(Estimator):
    """A CLIP model (image and text towers) with the class names embedded through a prompt."""

    default_random_classes = "tokens"

    def __init__(self, model: nn.Module, tokenizer, class_names: list[str], prompt: str = CLIP_PROMPT,
                 device: str | torch.device = "cpu", batch_size: int = 1024, preprocessing: str = "tensor"):
        if preprocessing not in CLIP_PREPROCESSING:
            raise ValueError(f"CLIP preprocessing must be one of {CLIP_PREPROCESSING}, got {preprocessing!r}")
        self.preprocessing = preprocessing
        # Mixed precision on GPU only: bf16 by default, fp16 as the official code runs CLIP.
        self.half = torch.float16 if preprocessing == "official" else torch.bfloat16
        self.model = model.eval().to(device)
        self.tokenizer, self.class_names, self.prompt = tokenizer, list(class_names), prompt
        self.device, self.batch_size = torch.device(device), batch_size
        size = model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.context_length = model.context_length
        self.mean = torch.tensor(OPENAI_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_STD, device=self.device).view(1, 3, 1, 1)
        self._classes = None

    @classmethod
    def from_open_clip(cls, class_names: list[str], model_name: str = "ViT-B-32", pretrained: str | None = None,
                       download: bool = True, device: str | torch.device = "cpu", **kwargs) -> "CLIPEstimator":
        """The paper's estimator: ``ViT-B-32`` with OpenAI weights, from the hub (cache) or a local file.

        ``pretrained`` is an open_clip tag or a checkpoint path; it defaults to the file named by
        the environment variable ``LNLKIT_CLIP_WEIGHTS``, else the tag ``openai``. With
        ``download=False`` only files already on disk are used, so an offline machine fails at
        once instead of after the hub's retries.
        """
        import open_clip

        source = pretrained or os.environ.get("LNLKIT_CLIP_WEIGHTS") or "openai"
        tag = open_clip.get_pretrained_cfg(model_name, source) if not os.path.isfile(source) else {}
        # OpenAI's checkpoints were trained with QuickGELU; a tag says so itself, a bare file does not.
        quick_gelu = tag.get("quick_gelu", source == "openai" or "openai" in os.path.basename(source))
        if tag:  # look for the weights before asking the hub, which retries for about a minute offline
            cached = _cached_hub_file(tag.get("hf_hub", ""))
            if cached is None and not (download and hub_reachable()):
                raise DataUnavailableError(clip_weights_hint(model_name, source))
            source = cached or source
        try:
            model = open_clip.create_model(model_name, pretrained=source, device=device,
                                           force_quick_gelu=quick_gelu)
        except Exception as error:  # offline: the hub download fails with one of several errors
            raise DataUnavailableError(clip_weights_hint(model_name, source)) from error
        return cls(model, open_clip.get_tokenizer(model_name), class_names, device=device, **kwargs)

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float in [0, 1], three channels, at the model's resolution."""
        resize = tuple(images.shape[-2:]) != self.image_size
        if resize and self.preprocessing == "official" and images.dtype == torch.uint8:
            x, resize = pil_bicubic(images, self.image_size).to(self.device), False
        else:
            x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if resize:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        return x

    def _embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=self.half, enabled=self.device.type == "cuda"):
            return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._embed_pixels((self._pixels(images) - self.mean) / self.std)

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=self.half, enabled=self.device.type == "cuda"):
            return F.normalize(self.model.encode_text(tokens.to(self.device)).float(), dim=-1)

    def class_embeddings(self) -> torch.Tensor:
        if self._classes is None:
            prompts = [self.prompt.format(name) for name in self.class_names]
            self._classes = self.encode_tokens(self.tokenizer(prompts))
        return self._classes

    @torch.no_grad()
    def random_images(self, n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
        """``uniform``: U[0,1) pixels fed without normalisation (the official code);
        ``gaussian``: N(0, 1) in the normalised input space."""
        x = random_pixels((n, 3, *self.image_size), kind, generator)
        return _batched(lambda b: self._embed_pixels(b.to(self.device)), x, self.batch_size)

    @torch.no_grad()
    def random_classes(self, n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
        """``tokens``: every position a random token id in [0, 100) (the official code, no start or
        end token); ``words``: random vocabulary ids between proper start and end tokens."""
        if kind == "tokens":
            tokens = torch.randint(0, 100, (n, self.context_length), generator=generator)
        elif kind == "words":
            sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
            tokens = torch.randint(0, sot, (n, self.context_length), generator=generator)
            tokens[:, 0], tokens[:, -1] = sot, eot
        else:
            raise ValueError(f"random class kind must be 'tokens' or 'words', got {kind!r}")
        return _batched(self.encode_tokens, tokens, self.batch_size)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (False when HF_HUB_OFFLINE is set)."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_hub_file(repo: str) -> str | None:
    """The weights of a hub repository if they are in the local cache (no network access)."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(repo.rstrip("/"), name) if repo else None
        if isinstance(path, str):
            return path
    return None


def tiny_clip(image_size: int = 32, embed_dim: int = 32, width: int = 32, context_length: int = 16,
              seed: int = 0) -> nn.Module:
    """A randomly initialised open_clip CLIP of a few layers: for tests and offline plumbing only."""
    import open_clip

    vision = dict(image_size=image_size, layers=1, width=width, patch_size=8, head_width=16)
    text = dict(context_length=context_length, vocab_size=49408, width=width, heads=2, layers=1)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        return open_clip.CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text)


def clip_tokenizer(context_length: int = 77):
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32", context_length=context_length)


# ---------------------------------------------------------------- any encoder + class embeddings


class EmbeddingEstimator(Estimator):
    """An image encoder (normalised inputs -> vectors) and one embedding per class."""

    def __init__(self, encoder: nn.Module, class_vectors: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 input_shape: tuple, device: str | torch.device = "cpu", batch_size: int = 1024):
        self.device, self.batch_size = torch.device(device), batch_size
        self.input_shape = tuple(input_shape)  # one input, (C, H, W)
        self.encoder = encoder.eval().to(self.device)
        self.class_vectors = class_vectors.detach().to(self.device)
        self.mean = mean.to(self.device).view(1, -1, 1, 1)
        self.std = std.to(self.device).view(1, -1, 1, 1)

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x.to(self.device)).float(), dim=-1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        # in batches: a CIFAR-sized training set through a convolutional encoder at once needs ~10 GB
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            x = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
            out.append(self._embed((x.to(self.device) - self.mean) / self.std))
        return torch.cat(out) if out else torch.empty(0, self.class_vectors.shape[1], device=self.device)

    def class_embeddings(self) -> torch.Tensor:
        return F.normalize(self.class_vectors.float(), dim=-1)

    def random_images(self, n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
        """``uniform``: U[0,1) pixels without normalisation (as the official code feeds CLIP);
        ``gaussian``: N(0, 1) in the normalised input space."""
        x = random_pixels((n, *self.input_shape), kind, generator)
        return _batched(self._embed, x, self.batch_size)

    def random_classes(self, n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
        """A class table has no "text" to randomise; ``gaussian`` draws vectors with the per-dimension
        mean and standard deviation of the class embeddings."""
        if kind != "gaussian":
            raise ValueError(f"an embedding estimator draws random classes of kind 'gaussian', not {kind!r}")
        table = self.class_vectors.float().cpu()
        mu, sd = table.mean(0), table.std(0)
        draws = mu + sd * torch.randn((n, table.shape[1]), generator=generator)
        return F.normalize(draws, dim=-1).to(self.device)


class ProjectedEncoder(nn.Module):
    """A classifier's feature extractor followed by a linear projection (CLIP's image projection)."""

    def __init__(self, backbone: nn.Module, embed_dim: int):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Linear(backbone.feature_dim, embed_dim, bias=False)

    def forward(self, x):
        return self.projection(self.backbone.features(x))


def proxy_state(estimator: EmbeddingEstimator, model: str, num_classes: int) -> dict:
    """What rebuilds a proxy estimator: weights, class vectors, input statistics (a cacheable artefact)."""
    return {"model": model, "num_classes": num_classes, "embed_dim": estimator.class_vectors.shape[1],
            "input_shape": list(estimator.input_shape), "encoder": estimator.encoder.state_dict(),
            "class_vectors": estimator.class_vectors, "mean": estimator.mean.flatten(), "std": estimator.std.flatten()}


def proxy_from_state(state: dict, device: str | torch.device = "cpu") -> EmbeddingEstimator:
    """The inverse of :func:`proxy_state`."""
    from .models import build_model

    c, h, w = state["input_shape"]
    encoder = ProjectedEncoder(build_model(state["model"], state["num_classes"], (h, w, c)), state["embed_dim"])
    encoder.load_state_dict(state["encoder"])
    return EmbeddingEstimator(encoder, state["class_vectors"], state["mean"], state["std"], (c, h, w), device=device)


def train_proxy_estimator(reference: LabelledData, model: str = "small_cnn", embed_dim: int = 64,
                          epochs: int = 30, batch_size: int = 64, lr: float = 1e-3, temperature: float = 0.07,
                          seed: int = 0, device: str | torch.device = "cpu") -> EmbeddingEstimator:
    """Train a CLIP-style estimator on clean held-out data: image encoder + class embeddings.

    The loss is CLIP's image-to-text contrastive loss with the C class embeddings as the texts:
    cross-entropy over cos(phi(x), e_c) / temperature. So clean pairs are pulled to the positive
    side and wrong pairs pushed to the negative side, the property OSA's Sec. 2.2 relies on.
    """
    from .models import build_model

    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        images = torch.from_numpy(np.ascontiguousarray(reference.inputs.transpose(0, 3, 1, 2))).float() / 255.0
        labels = torch.as_tensor(reference.labels)
        mean, std = images.mean((0, 2, 3)), images.std((0, 2, 3)).clamp_min(1e-6)
        x_all = ((images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(device)
        network = build_model(model, reference.num_classes, reference.inputs.shape[1:]).to(device)
        if hasattr(network, "init_from_data"):  # patch whitening (CompactResNet): images only
            network.init_from_data(x_all[:5000])
        encoder = ProjectedEncoder(network, embed_dim).to(device)
        class_vectors = nn.Parameter(torch.randn(reference.num_classes, embed_dim, generator=gen).to(device))
        optimizer = torch.optim.Adam([*encoder.parameters(), class_vectors], lr=lr)
        for _ in range(epochs):
            encoder.train()
            order = torch.randperm(len(labels), generator=gen)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                x, y = x_all[idx.to(device)], labels[idx].to(device)
                logits = F.normalize(encoder(x), dim=-1) @ F.normalize(class_vectors, dim=-1).T / temperature
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return EmbeddingEstimator(encoder, class_vectors, mean, std, tuple(x_all.shape[1:]), device=device)


def cached_proxy_estimator(facts, stages, model: str = "small_cnn", epochs: int = 30,
                           seed: int = 0) -> EmbeddingEstimator:
    """The proxy estimator of a run, trained on its clean held-out split as the stage
    ``osa-proxy-estimator`` (OSA's estimator, and EchoSelect's encoder offline)."""
    if facts.reference is None:
        raise ValueError("the proxy estimator is trained on a clean held-out split: run with "
                         "held_out=0.3 (command line: --held-out 0.3)")
    config = {"model": model, "embed_dim": 64, "epochs": epochs, "seed": seed}

    def build():
        estimator = train_proxy_estimator(facts.reference, model=model, epochs=epochs, seed=seed,
                                          device=facts.device)
        return proxy_state(estimator, model, facts.num_classes)

    # The proxy learns from clean labels only: its key leaves the reference's noisy labels out.
    reference = facts.reference.digest(noisy=False)
    return proxy_from_state(stages.run("osa-proxy-estimator", {**config, "reference": reference}, build),
                            facts.device)
