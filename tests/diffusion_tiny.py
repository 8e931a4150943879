"""Tiny diffusers pipelines built in code (no download), the way diffusers' own tests build dummy components.

`tiny_pipeline_folder(mode, folder)` builds a pipeline of the mode's class from a 2-block UNet
(block_out_channels (32, 64)), a 2-block AutoencoderKL, a 2-layer CLIP text encoder and a CLIP
tokenizer whose vocabulary and merges are written here, and saves it with `save_pretrained`. Random
weights: the outputs mean nothing, but every path a real model takes (loading, tokenising, encoding,
scheduling, the VAE, guidance, masks) runs.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

#: The UNet's input channels per mode: latents, + mask and masked-image latents, + image latents.
IN_CHANNELS = {"img2img": 4, "inpaint": 9, "instruct": 8, "ledits": 4}
PIPELINES = {"img2img": "StableDiffusionImg2ImgPipeline", "inpaint": "StableDiffusionInpaintPipeline",
             "instruct": "StableDiffusionInstructPix2PixPipeline", "ledits": "LEditsPPPipelineStableDiffusion"}


def tiny_tokenizer(folder: Path):
    """A CLIP tokenizer over single characters plus a few merges, written to `folder`."""
    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + ".,'-!"
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    merges = [("t", "h"), ("th", "e</w>"), ("o", "l"), ("ol", "d"), ("e", "r</w>")]
    tokens += [a + b for a, b in merges]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    # model_max_length: the default is effectively infinite, and the text encoder has 77 positions.
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def tiny_components(mode: str, tokenizer_dir: Path) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    # LEDITS++ reads its cross-attention maps at a quarter of the latent size, where Stable
    # Diffusion has attention; two blocks reach only half, so its UNet gets a third.
    blocks = 3 if mode == "ledits" else 2
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64)[:blocks], layers_per_block=2, sample_size=16, in_channels=IN_CHANNELS[mode],
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")[:blocks],
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")[-blocks:], cross_attention_dim=32)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=32)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer.get_vocab()),
        max_position_embeddings=77))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def tiny_pipeline_folder(mode: str, folder: Path) -> Path:
    """Build the mode's tiny pipeline and `save_pretrained` it into `folder` (returned)."""
    import inspect

    import diffusers

    cls = getattr(diffusers, PIPELINES[mode])
    parts = tiny_components(mode, folder.parent / f"{folder.name}-tokenizer")
    params = inspect.signature(cls.__init__).parameters
    for optional in ("safety_checker", "feature_extractor", "image_encoder"):
        if optional in params:
            parts[optional] = None
    if "requires_safety_checker" in params:
        parts["requires_safety_checker"] = False
    pipe = cls(**parts)
    pipe.save_pretrained(str(folder))
    return folder


_BUILT: dict[str, Path] = {}


def tiny_model(mode: str) -> Path:
    """The mode's tiny pipeline folder, built once per test process in a temporary folder."""
    import atexit
    import shutil
    import tempfile

    if mode not in _BUILT:
        root = Path(tempfile.mkdtemp(prefix=f"facecf-tiny-{mode}-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _BUILT[mode] = tiny_pipeline_folder(mode, root / "pipeline")
    return _BUILT[mode]


#: Editor settings for the tiny pipelines: 32 px working size, 2 steps, prompts for age and gender.
TINY = {"resolution": 32, "steps": 2, "batch_size": 2,
        "prompts": {"older": "the old face", "younger": "a young face", "male": "a man", "female": "a woman",
                    "neutral": "a face"}}


def _half_denoise_mode():
    from editors.diffusion.modes import Img2Img

    class HalfDenoise(Img2Img):
        """A user's adapter: img2img at half the configured denoising (for the plug-in test)."""

        def run(self, pipe, images, mask, cond, denoise, generators, settings):  # noqa: ANN001
            return super().run(pipe, images, mask, cond, denoise / 2, generators, settings)

    return HalfDenoise


HalfDenoise = _half_denoise_mode()
