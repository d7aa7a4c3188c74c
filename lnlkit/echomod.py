"""EchoMod, the first step of EchoAlign: modify each training image so that it fits its noisy label.

The paper's generator (Appendix B) is Stable Diffusion 1.5 with ControlNet 1.1 canny: the
Canny edges of the image (low = high = 75) keep its structure, the prompt "a photo of
{noisy label}" (no negative prompt) sets its content; DDIM with 20 steps, one sample per
image with a fixed seed, mixed precision. Its guidance scale and resolution did not survive
in the paper's text; the defaults here are those of ControlNet 1.1's canny demo (guidance
9.0, DDIM eta 1.0, 512 px), and every setting is recorded with the edits (:meth:`settings`).

- :func:`canny_edges`: the control signal;
- :class:`ControlNetEditor`: the paper's generator behind lnlkit's editing interface
  ``edit(images, labels, class_names, first_index)`` (uint8 (N, H, W, 3) in and out, at the
  input's size). ``mode="text2image"`` generates from noise under the edge map, as the
  ControlNet demo does; ``mode="img2img"`` starts from the noised original (``strength``);
- :func:`edit_resumable`: runs an editor over a data set in chunks saved as they finish, so
  that editing 50,000 images (hours of GPU) resumes where it stopped;
- :func:`tiny_controlnet_pipeline`: the same pipeline built from tiny configurations with
  random weights, as diffusers' own tests do: it runs offline and in seconds on a CPU (tests,
  timing), and edits nothing meaningfully.

The weights are read from the Hugging Face cache only (``local_files_only``); when they are
absent :class:`WeightsMissing` says which model ids to download and where they go.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write

PAPER_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # formerly runwayml/stable-diffusion-v1-5
PAPER_CONTROLNET = "lllyasviel/control_v11p_sd15_canny"
MODES = ("text2image", "img2img")


class WeightsMissing(RuntimeError):
    """The generator's weights are not in the local Hugging Face cache."""


def canny_edges(images: np.ndarray, low: int = 75, high: int = 75) -> np.ndarray:
    """OpenCV's Canny edge map of each uint8 image (N, H, W, 3 or 1) -> uint8 (N, H, W), 0 or 255.

    Like ControlNet's canny annotator, a colour image goes to ``cv2.Canny`` as it is (the
    gradient is taken per channel and the largest kept).
    """
    import cv2

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"canny_edges needs uint8 images (N, H, W, 3 or 1), got {images.dtype} {images.shape}")
    return np.stack([cv2.Canny(np.ascontiguousarray(image if image.shape[-1] == 3 else image[..., 0]), low, high)
                     for image in images])


def _resize(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """uint8 (N, H, W, C) images resized with PIL's bicubic filter to ``size`` (square or (H, W))."""
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    if images.shape[1:3] == (height, width):
        return images
    return np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC)) for image in images])


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown EchoMod mode {mode!r}; choose from {MODES}")


def _pipeline_class(mode: str):
    """diffusers' ControlNet pipeline for the mode: from noise, or from the noised original."""
    from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetPipeline

    _check_mode(mode)
    return StableDiffusionControlNetPipeline if mode == "text2image" else StableDiffusionControlNetImg2ImgPipeline


def _missing_message(base_model: str, controlnet: str, error: Exception) -> str:
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (f"EchoMod's generator needs the weights of {base_model!r} and {controlnet!r} in the local Hugging "
            f"Face cache ({cache}/hub), and they are not there ({type(error).__name__}). On a machine with "
            f"internet run `huggingface-cli download {base_model}` and `huggingface-cli download {controlnet}` "
            "(about 5 GB), then copy the cache folder here or point HF_HOME at it. Without the weights, "
            "use the generator trained here (EchoAlign's default in the smoke and cpu profiles).")


def load_controlnet_pipeline(base_model: str = PAPER_BASE_MODEL, controlnet: str = PAPER_CONTROLNET,
                             mode: str = "text2image", device: str | torch.device = "cpu"):
    """The paper's pipeline from the local cache, with a DDIM scheduler; half precision on a GPU."""
    from diffusers import ControlNetModel, DDIMScheduler

    pipeline_class = _pipeline_class(mode)
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        control = ControlNetModel.from_pretrained(controlnet, torch_dtype=dtype, local_files_only=True)
        pipeline = pipeline_class.from_pretrained(base_model, controlnet=control, torch_dtype=dtype,
                                                  safety_checker=None, requires_safety_checker=False,
                                                  local_files_only=True)
    except (OSError, ValueError) as error:  # diffusers raises these for a model absent from the cache
        raise WeightsMissing(_missing_message(base_model, controlnet, error)) from None
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    return pipeline.to(device)


def tiny_controlnet_pipeline(mode: str = "text2image", prompts=("a photo of {label}",), seed: int = 0):
    """The paper's pipeline in miniature, random weights, built offline: a UNet, a ControlNet copied
    from it, a VAE and a two-layer CLIP text encoder, and a byte-level BPE tokenizer trained on
    ``prompts``. It runs the same code path as the real one."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    pipeline_class = _pipeline_class(mode)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, norm_num_groups=4,
            attention_head_dim=2)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
        vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=4)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, vocab_size=300,
            max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=2))
    special = ["<bos>", "<eos>", "<pad>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(list(prompts), trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", 0), ("<eos>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, model_max_length=77, bos_token="<bos>",
                                        eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)  # Stable Diffusion 1.5's schedule
    pipeline = pipeline_class(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              controlnet=controlnet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False)
    pipeline.lnlkit_weights = "tiny, random"  # recorded by ControlNetEditor.settings
    return pipeline


class ControlNetEditor:
    """The paper's EchoMod generator: edit images toward their (noisy) labels under Canny control.

    Parameters
    ----------
    pipeline : diffusers pipeline, optional
        Already built (e.g. :func:`tiny_controlnet_pipeline`); default: loaded from the local
        cache on first use (:func:`load_controlnet_pipeline`).
    mode : "text2image" or "img2img"
    resolution : int
        The side the image, its edge map and the generation work at (the paper's value was
        lost; 512 in the ControlNet demo). Edits are resized back to the input's size.
    steps, guidance_scale, eta, strength : DDIM steps (20), classifier-free guidance (9.0),
        DDIM eta (1.0), and for img2img how far the original is noised (0.8).
    control_scale, guess_mode : the ControlNet's weight on the UNet, one constant for all its
        layers (1.0, Appendix B's "control strength"), and diffusers' guess mode (off; the
        paper's checklist mentions it for the demo's guess mode, whose per-layer scales differ
        from diffusers').
    canny_low, canny_high, prompt : the control (75, 75) and the text ("a photo of {label}").
    seed : int
        Image i of a data set is edited with seed ``seed + i`` whatever batch it falls in.
    """

    def __init__(self, pipeline=None, *, base_model: str = PAPER_BASE_MODEL, controlnet: str = PAPER_CONTROLNET,
                 mode: str = "text2image", resolution: int = 512, steps: int = 20, guidance_scale: float = 9.0,
                 eta: float = 1.0, strength: float = 0.8, canny_low: int = 75, canny_high: int = 75,
                 control_scale: float = 1.0, guess_mode: bool = False, prompt: str = "a photo of {label}",
                 seed: int = 0, batch_size: int = 16, device: str | torch.device = "cpu"):
        _check_mode(mode)
        if "{label}" not in prompt:
            raise ValueError(f"the prompt must contain '{{label}}', got {prompt!r}")
        if resolution % 8 or resolution < 8:
            raise ValueError(f"the resolution must be a positive multiple of 8 (the VAE's factor), got {resolution}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
        self.pipeline, self.base_model, self.controlnet = pipeline, base_model, controlnet
        self.mode, self.resolution, self.steps, self.guidance_scale = mode, resolution, steps, guidance_scale
        self.eta, self.strength, self.canny_low, self.canny_high = eta, strength, canny_low, canny_high
        self.control_scale, self.guess_mode = control_scale, guess_mode
        self.prompt, self.seed, self.batch_size, self.device = prompt, seed, batch_size, torch.device(device)

    def settings(self) -> dict:
        """Everything that defines the edits (recorded beside them and in the result file)."""
        return {"generator": "controlnet", "base_model": self.base_model, "controlnet": self.controlnet,
                "weights": getattr(self.pipeline, "lnlkit_weights", "pretrained"),
                "mode": self.mode, "resolution": self.resolution, "steps": self.steps,
                "guidance_scale": self.guidance_scale, "eta": self.eta,
                "strength": self.strength if self.mode == "img2img" else None, "control_scale": self.control_scale,
                "guess_mode": self.guess_mode, "canny_low": self.canny_low,
                "canny_high": self.canny_high, "prompt": self.prompt, "seed": self.seed, "scheduler": "DDIM"}

    def _pipeline(self):
        if self.pipeline is None:
            self.pipeline = load_controlnet_pipeline(self.base_model, self.controlnet, self.mode, self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        return self.pipeline

    def edit(self, images: np.ndarray, labels, class_names, first_index: int = 0) -> np.ndarray:
        """The edits of ``images`` (uint8 (N, H, W, 3)) toward ``labels``; image k uses seed
        ``seed + first_index + k``."""
        from PIL import Image

        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"EchoMod edits uint8 RGB images (N, H, W, 3), got {images.dtype} {images.shape}")
        pipeline = self._pipeline()
        edits = []
        for start in range(0, len(images), self.batch_size):
            batch = _resize(images[start:start + self.batch_size], self.resolution)
            edges = canny_edges(batch, self.canny_low, self.canny_high)
            control = [Image.fromarray(np.repeat(e[..., None], 3, axis=2)) for e in edges]
            prompts = [self.prompt.format(label=class_names[int(y)]) for y in labels[start:start + len(batch)]]
            generators = [torch.Generator(self.device).manual_seed(self.seed + first_index + start + k)
                          for k in range(len(batch))]
            common = dict(num_inference_steps=self.steps, guidance_scale=self.guidance_scale, eta=self.eta,
                          height=self.resolution, width=self.resolution, generator=generators, output_type="np",
                          controlnet_conditioning_scale=self.control_scale, guess_mode=self.guess_mode)
            if self.mode == "text2image":
                out = pipeline(prompts, image=control, **common).images
            else:
                out = pipeline(prompts, image=[Image.fromarray(b) for b in batch], control_image=control,
                               strength=self.strength, **common).images
            out = np.clip(np.round(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)
            edits.append(_resize(out, images.shape[1:3]))
        return np.concatenate(edits) if edits else images[:0].copy()


def edit_resumable(editor, images: np.ndarray, labels, class_names, folder: str | Path, chunk_size: int = 256,
                   progress: bool = True) -> np.ndarray:
    """Edit every image with ``editor``, a chunk at a time; each finished chunk is saved in ``folder``
    (``edits-<start>-<stop>.npy``) and loaded, not edited again, when the work is resumed.

    ``folder`` must belong to one editor setting and one data set (a stage folder keyed by
    both), since the chunk files carry only their positions.
    """
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chunks = []
    with tqdm(total=len(images), desc="EchoMod", unit="image", disable=not progress) as bar:
        for start in range(0, len(images), chunk_size):
            stop = min(start + chunk_size, len(images))
            path = folder / f"edits-{start:07d}-{stop:07d}.npy"
            if path.exists():
                chunk = np.load(path, allow_pickle=False)
            else:
                chunk = editor.edit(images[start:stop], labels[start:stop], class_names, first_index=start)
                with atomic_write(path, suffix=".npy") as tmp:
                    np.save(tmp, chunk, allow_pickle=False)
            chunks.append(chunk)
            bar.update(stop - start)
    return np.concatenate(chunks) if chunks else np.asarray(images)[:0].copy()
