"""The diffusers pipelines the diffusion editor drives, each behind one small adapter.

An adapter names its pipeline class and turns one batch (images at the model's resolution, the
inpainting mask, the prompt conditioning, per-image generators) into generated images in [0, 1].
Any other diffusers pipeline plugs in with an adapter of its own: subclass `Mode`, and pass it as
`editor.mode` through Hydra (`_target_: mypkg.MyMode`).

How strength reaches each method's own knob (see docs/EDITORS.md, "Diffusion editors"):

* `knob="prompt"` (img2img, inpaint, instruct): the text conditioning moves from the neutral prompt
  (strength 0) to the target prompt (strength 1) by linear interpolation of the encoded prompts, at
  fixed denoising, guidance and steps. Strength 0 is then exactly the sham: the same pipeline, seed,
  initial noise and steps with the neutral prompt.
* `knob="denoise"` (img2img, inpaint): the target prompt at denoising strength `strength x denoise`.
  Strength 0 denoises nothing; its sham is the VAE encode-decode round trip.
* ledits: the edit guidance scale is `strength x edit_guidance_scale`; strength 0 is the inversion's
  own reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass
class Conditioning:
    """Encoded prompts for one batch: `(N, 77, D)` each, on the pipeline's device and dtype."""

    prompt: torch.Tensor
    negative: torch.Tensor
    texts: list[str]  # the target prompts, for LEDITS++ (which encodes its own)


class Mode:
    """One diffusers pipeline family. `run` returns `(N, 3, R, R)` float in [0, 1]."""

    pipeline_class: ClassVar[str] = ""
    knobs: ClassVar[tuple[str, ...]] = ("prompt",)
    #: False where the pipeline keeps state across a call (LEDITS++'s inversion): run one face at a time.
    batched: ClassVar[bool] = True

    def prepare(self, pipe: Any) -> None:
        """Called once after loading (and after any configured scheduler replaced the model's own)."""

    def run(self, pipe: Any, images: torch.Tensor, mask: torch.Tensor, cond: Conditioning, denoise: float,
            generators: list[torch.Generator], settings: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def roundtrip(self, pipe: Any, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """VAE encode-decode of `images` (the sham of knob "denoise": what strength 0 denoises)."""
        vae = pipe.vae
        x = images.to(vae.device, vae.dtype) * 2 - 1
        latents = torch.cat([vae.encode(x[i:i + 1]).latent_dist.sample(g) for i, g in enumerate(generators)])
        return (vae.decode(latents).sample.float() / 2 + 0.5).clamp(0, 1)

    def fingerprint(self) -> dict[str, Any]:
        return {"mode": type(self).__name__, "pipeline": self.pipeline_class}


def _common(cond: Conditioning, generators: list[torch.Generator], settings: dict[str, Any]) -> dict[str, Any]:
    return {"prompt_embeds": cond.prompt, "negative_prompt_embeds": cond.negative, "generator": generators,
            "num_inference_steps": settings["steps"], "guidance_scale": settings["guidance_scale"],
            "output_type": "pt"}


class Img2Img(Mode):
    """SDEdit: noise the image to `denoise`, then denoise it toward the prompt."""

    pipeline_class = "StableDiffusionImg2ImgPipeline"
    knobs = ("prompt", "denoise")

    def run(self, pipe, images, mask, cond, denoise, generators, settings):  # noqa: ANN001, ARG002
        return pipe(image=images, strength=denoise, **_common(cond, generators, settings)).images.float()


class Inpaint(Mode):
    """An inpainting model refills the hard mask of the region; the rest conditions it."""

    pipeline_class = "StableDiffusionInpaintPipeline"
    knobs = ("prompt", "denoise")

    def run(self, pipe, images, mask, cond, denoise, generators, settings):  # noqa: ANN001
        size = images.shape[-1]
        return pipe(image=images, mask_image=mask, strength=denoise, height=size, width=size,
                    **_common(cond, generators, settings)).images.float()


class Instruct(Mode):
    """InstructPix2Pix: the prompt is an instruction; `image_guidance_scale` holds the photo."""

    pipeline_class = "StableDiffusionInstructPix2PixPipeline"

    def run(self, pipe, images, mask, cond, denoise, generators, settings):  # noqa: ANN001, ARG002
        return pipe(image=images, image_guidance_scale=settings["image_guidance_scale"],
                    **_common(cond, generators, settings)).images.float()


class Ledits(Mode):
    """LEDITS++: invert the photo (edit-friendly DDPM inversion), then steer the reconstruction.

    It fits the editor with one caveat: the pipeline stores the inversion on itself and draws its
    inversion noise from one generator, so faces run one at a time (each with its own generator),
    never as a batch. Strength scales the edit guidance; strength 0 is the plain reconstruction.
    """

    pipeline_class = "LEditsPPPipelineStableDiffusion"
    knobs = ("edit_guidance",)
    batched = False

    def prepare(self, pipe):  # noqa: ANN001
        """LEDITS++ inverts with DDIM or second-order SDE-DPM-Solver++ only; diffusers 0.42's DDIM path
        indexes its noise table with a float tensor and fails, so the scheduler is always the latter."""
        from diffusers import DPMSolverMultistepScheduler

        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            pipe.scheduler.config, algorithm_type="sde-dpmsolver++", solver_order=2)

    def run(self, pipe, images, mask, cond, denoise, generators, settings):  # noqa: ANN001, ARG002
        out = []
        for i, gen in enumerate(generators):
            pipe.invert(image=images[i:i + 1], num_inversion_steps=settings["steps"], generator=gen,
                        source_guidance_scale=settings["guidance_scale"], skip=settings["ledits_skip"])
            scale = settings["edit_weight"] * settings["edit_guidance_scale"]
            edit = {"editing_prompt": [cond.texts[i]], "edit_guidance_scale": scale} if scale > 0 else {}
            out.append(pipe(generator=gen, output_type="pt", **edit).images.float())
        return torch.cat(out)


MODES: dict[str, type[Mode]] = {"img2img": Img2Img, "inpaint": Inpaint, "instruct": Instruct, "ledits": Ledits}
