"""`DiffusionEditor`: age or gender edits by any diffusers pipeline, masked to the face and pasted back.

Per batch: the aligned crops are resized to the model's resolution; the adapter of the configured
mode (`editors.diffusion.modes`) generates; the result is resized back, its colour drift removed
(`match_colour`, measured outside the region), and blended into the original through the feathered
region mask (`paste_back`), so nothing outside the region changes by a single grey level.

Determinism: every face draws its noise from its own generator, seeded by the run's seed and the
face's id (`FaceBatch.generators`), so a face's edit never depends on the batch it came in; the sham
and every strength draw the same initial noise. The model is resolved and digested at start-up
(`fingerprint`), so a missing model is one clear error before any work, and cached edits are keyed
by the weights that made them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from editors.diffusion.loading import load_pipeline, model_digest, resolve, torch_dtype
from editors.diffusion.modes import MODES, Conditioning, Mode
from editors.diffusion.regions import match_colour, paste_back, region_masks
from editors.gender.targets import check_target, face_targets, gender_target_check
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch, TargetCheck

PROPERTIES = ("age", "gender")
AGE_DIRECTIONS = ("older", "younger")


class DiffusionEditor(Editor):
    """Edit age or gender with a diffusers pipeline (img2img, inpaint, instruct, ledits, or your own `Mode`).

    Args:
        model: a hub id (`timbrooks/instruct-pix2pix`) or a diffusers folder (`save_pretrained`).
        mode: "img2img", "inpaint", "instruct", "ledits", or a `Mode` instance (Hydra `_target_`).
        property: "age" or "gender": what the edit changes, and how the audit checks it.
        direction: for age, "older" or "younger".
        target: for gender, "male", "female" or "opposite" (per face, from `metadata_key`).
        prompts: prompt per direction ("older", "younger", "male", "female") and "neutral" (the sham).
        negative_prompt: the negative prompt of classifier-free guidance (same for sham and edit).
        knob: what strength moves: "prompt" (neutral -> target conditioning), "denoise" (img2img,
            inpaint) or "edit_guidance" (ledits). See `editors.diffusion.modes`.
        steps, guidance_scale, image_guidance_scale, denoise, edit_guidance_scale, ledits_skip: the
            pipeline's settings (`denoise` is the denoising strength at editor strength 1).
        scheduler: a diffusers scheduler class name replacing the model's own, or None.
        resolution: side of the square the model works at (a multiple of 8).
        dtype: "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16" or "bf16".
        revision: a hub commit that pins a hub id.
        region: where the edit acts ("face", "skin", "mouth", "brows", "eyes", "nose", "full").
        grow, feather: the region's dilation and its blend's blur, in face widths.
        colour_match: remove the generated image's colour drift, measured outside the region.
        batch_size: faces per pipeline call (the engine halves it on CUDA out-of-memory).
        cpu_offload: `enable_model_cpu_offload()` on CUDA (for models larger than the GPU).
        attention_slicing: `enable_attention_slicing()` (less memory, a little slower).
        metadata_key: the dataset column read by target="opposite".
    """

    version = 1

    def __init__(self, model: str, mode: str | Mode = "instruct", property: str = "age",  # noqa: A002
                 direction: str | None = None, target: str | None = None, prompts: dict[str, str] | None = None,
                 negative_prompt: str = "", knob: str | None = None, steps: int = 20, guidance_scale: float = 7.5,
                 image_guidance_scale: float = 1.5, denoise: float = 0.6, edit_guidance_scale: float = 5.0,
                 ledits_skip: float = 0.15, scheduler: str | None = None, resolution: int = 512,
                 dtype: str = "auto", revision: str | None = None, region: str = "face", grow: float = 0.06,
                 feather: float = 0.03, colour_match: bool = True, batch_size: int = 4, cpu_offload: bool = False,
                 attention_slicing: bool = False, metadata_key: str = "gender") -> None:
        self._mode = MODES[mode]() if isinstance(mode, str) and mode in MODES else mode
        if not isinstance(self._mode, Mode):
            raise ValueError(f"editor.mode={mode!r}: allowed: {', '.join(MODES)}, or a Mode via _target_")
        if property not in PROPERTIES:
            raise ValueError(f"editor.property={property!r}: allowed: {PROPERTIES} (the audit judges exist for these)")
        self.property = property
        if property == "age":
            self.direction = direction or "older"
            if self.direction not in AGE_DIRECTIONS:
                raise ValueError(f"editor.direction={self.direction!r}: allowed for age: {AGE_DIRECTIONS}")
            self.target = None
        else:
            self.target = check_target(target or "female")
            self.direction = self.target
        self.prompts = dict(prompts or {})
        needed = {"neutral", *(("male", "female") if self.target == "opposite" else (self.direction,))}
        if missing := sorted(needed - set(self.prompts)):
            raise ValueError(f"editor.prompts lacks {missing}: give a prompt per direction and a neutral one")
        self.knob = knob or self._mode.knobs[0]
        if self.knob not in self._mode.knobs:
            raise ValueError(f"editor.knob={self.knob!r}: {type(self._mode).__name__} allows {self._mode.knobs}")
        if resolution % 8:
            raise ValueError(f"editor.resolution={resolution} must be a multiple of 8 (the VAE's stride)")
        self.model, self.revision, self.mode = str(model), revision, type(self._mode).__name__.lower()
        self.negative_prompt = negative_prompt
        self.steps, self.guidance_scale, self.image_guidance_scale = int(steps), float(guidance_scale), float(
            image_guidance_scale)
        self.denoise, self.edit_guidance_scale, self.ledits_skip = float(denoise), float(edit_guidance_scale), float(
            ledits_skip)
        self.scheduler, self.resolution, self.dtype = scheduler, int(resolution), dtype
        self.region, self.grow, self.feather, self.colour_match = region, float(grow), float(feather), bool(colour_match)
        self.batch_size, self.cpu_offload, self.attention_slicing = int(batch_size), bool(cpu_offload), bool(
            attention_slicing)
        self.metadata_key = metadata_key
        self._pipe: Any = None
        self._pipe_device: torch.device | None = None
        self._folder: Path | None = None

    # -- model ----------------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        """The model's folder (resolved once; raises `DiffusionModelUnavailable` when it cannot be had)."""
        if self._folder is None:
            self._folder = resolve(self.model, self.revision)
        return self._folder

    def pipeline(self, device: torch.device) -> Any:
        """The pipeline on `device`, loaded on first use."""
        if self._pipe is None or self._pipe_device != device:
            pipe = load_pipeline(self._mode.pipeline_class, self.folder, torch_dtype(self.dtype, device), self.scheduler)
            self._mode.prepare(pipe)
            if self.cpu_offload and device.type == "cuda":
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.to(device)
            if self.attention_slicing:
                pipe.enable_attention_slicing()
            self._pipe, self._pipe_device = pipe, device
        return self._pipe

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "model_digest": model_digest(self.folder), **self._mode.fingerprint()}

    # -- policy ---------------------------------------------------------------------------------------
    def audit_policy(self) -> AuditPolicy:
        """Age: the judged age moves `min_age_change` years the editor's way; gender: see `gender_target_check`."""
        if self.property == "age":
            sign = 1 if self.direction == "older" else -1
            return AuditPolicy("age", self.direction, TargetCheck(("delta_est_age",), "min_age_change", sign))
        return AuditPolicy("gender", self.direction, gender_target_check(self.target))

    def face_directions(self, batch: FaceBatch) -> list[str]:
        """Each face's direction: the age direction, or its target sex (per face for "opposite")."""
        if self.property == "age":
            return [self.direction] * len(batch)
        return face_targets(batch, self.target, self.metadata_key)

    # -- the edit -------------------------------------------------------------------------------------
    def _encode(self, pipe: Any, texts: list[str]) -> torch.Tensor:
        """CLIP embeddings `(N, 77, D)` of `texts`, as the pipelines' own `encode_prompt` makes them."""
        tok = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        device = pipe._execution_device
        return pipe.text_encoder(tok.input_ids.to(device))[0].to(pipe.unet.dtype)

    def _conditioning(self, pipe: Any, targets: list[str], weight: float) -> Conditioning:
        prompt = self._encode(pipe, targets)
        if self.knob == "prompt":  # only this knob moves from the neutral prompt
            prompt = torch.lerp(self._encode(pipe, [self.prompts["neutral"]] * len(targets)), prompt, weight)
        negative = self._encode(pipe, [self.negative_prompt] * len(targets))
        return Conditioning(prompt, negative, targets)

    def _generate(self, pipe: Any, x: torch.Tensor, mask: torch.Tensor, targets: list[str], strength: float,
                  generators: list[torch.Generator]) -> torch.Tensor:
        denoise = self.denoise * strength if self.knob == "denoise" else self.denoise
        if self.knob == "denoise" and int(self.steps * denoise) == 0:  # no step to denoise: strength 0's round trip
            return self._mode.roundtrip(pipe, x, generators)
        settings = {"steps": self.steps, "guidance_scale": self.guidance_scale,
                    "image_guidance_scale": self.image_guidance_scale, "ledits_skip": self.ledits_skip,
                    "edit_guidance_scale": self.edit_guidance_scale, "edit_weight": strength}
        step = self.batch_size if self._mode.batched else 1
        out = []
        for i in range(0, len(x), step):
            part = slice(i, i + step)
            cond = self._conditioning(pipe, targets[part], strength)
            out.append(self._mode.run(pipe, x[part], mask[part], cond, denoise, generators[part], settings))
        return torch.cat(out)

    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        strength = float(strength)
        if not 0.0 <= strength <= 1.0 or math.isnan(strength):
            raise ValueError(f"strength={strength} must be in [0, 1]")
        images = batch.images.float()
        if len(batch) == 0:
            return EditResult(images.clone(), torch.zeros_like(images[:, :1]), [], None)
        pipe = self.pipeline(batch.device)
        hard, blend = region_masks(batch.landmarks, batch.size, self.region, self.grow, self.feather)
        size = (self.resolution, self.resolution)
        x = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        m = (F.interpolate(hard, size=size, mode="bilinear", align_corners=False) > 0.5).float()
        directions = self.face_directions(batch)
        targets = [self.prompts[d] for d in directions]
        with torch.inference_mode():
            generated = self._generate(pipe, x, m, targets, strength, batch.generators(seed, "diffusion"))
        generated = F.interpolate(generated.to(images.device), size=batch.size, mode="bilinear",
                                  antialias=True, align_corners=False).clamp(0, 1)
        if self.colour_match and self.region != "full":
            generated = match_colour(generated, images, 1.0 - blend)
        out = paste_back(images, generated, blend)
        return EditResult(out, blend, self._metadata(strength, directions), None)

    def _metadata(self, strength: float, directions: list[str]) -> list[dict[str, Any]]:
        sham = {"prompt": "neutral_prompt", "denoise": "vae_roundtrip", "edit_guidance": "reconstruction"}[self.knob]
        metas = []
        for direction in directions:
            meta: dict[str, Any] = {"strength": strength, "prompt": self.prompts[direction]}
            if strength == 0:
                meta.update(sham=sham, prompt=self.prompts["neutral"])
            if self.property == "gender":
                meta["target"] = direction  # the audit reads each face's direction from here
            metas.append(meta)
        return metas
