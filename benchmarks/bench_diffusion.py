"""Diffusion editor throughput against the raw diffusers pipeline at the same batch (not a test).

    python benchmarks/bench_diffusion.py [--scale full|tiny] [--mode instruct] [--device cuda] [--batch 8]
        [--size 512] [--steps 20] [--repeats 2] [--dtypes fp16 fp32] [--oom-batch 0] [--check]

The pipeline is built in code with random weights (no download): `--scale full` uses Stable
Diffusion 1.5's widths (UNet 320-640-1280-1280, CLIP ViT-L text encoder, the SD VAE), `--scale tiny`
the test suite's tiny components (a CPU smoke run). Both sides get the same faces (synthetic crops of
`--size` px), prompts, steps, guidance and per-face generators, and are timed the same way in this
process: one untimed warm-up call, then the best of `--repeats`.

* ratio = editor throughput / raw pipeline throughput, per dtype; target >= 0.9 (the editor adds text
  encoding of the neutral prompt, the region masks, resizing, colour matching and the paste-back);
* fp16 against fp32, editor throughput;
* `--oom-batch N`: the engine's out-of-memory back-off (`BatchBackoff`, as the edit step uses it) on N
  faces in one editor call at 1 step; prints the batch that fitted.

`--check` exits 1 when a ratio misses the target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny components live with the tests

TARGET = 0.9
PROMPTS = {"older": "make the person look thirty years older", "neutral": "keep the photo exactly the same"}


def full_components(mode: str) -> dict:
    """Stable Diffusion 1.5's architecture with random weights (UNet ~860 M parameters)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusion_tiny import IN_CHANNELS, tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=IN_CHANNELS[mode], out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, layers_per_block=2, sample_size=512)
    tokenizer = tiny_tokenizer(Path(tempfile.mkdtemp(prefix="bench-tokenizer-")))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        vocab_size=len(tokenizer.get_vocab()), max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def build_pipeline(mode: str, scale: str, device: torch.device, dtype: torch.dtype):
    import inspect

    import diffusers
    from diffusion_tiny import PIPELINES, tiny_components

    parts = full_components(mode) if scale == "full" else tiny_components(
        mode, Path(tempfile.mkdtemp(prefix="bench-tokenizer-")))
    cls = getattr(diffusers, PIPELINES[mode])
    params = inspect.signature(cls.__init__).parameters
    extra = {k: None for k in ("safety_checker", "feature_extractor", "image_encoder") if k in params}
    if "requires_safety_checker" in params:
        extra["requires_safety_checker"] = False
    pipe = cls(**parts, **extra).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def on_device(batch, device: torch.device):
    """The batch's tensors moved to `device` (faces are edited where they live)."""
    for name in ("images", "landmarks", "blendshapes", "boxes", "face_mask", "pose"):
        setattr(batch, name, getattr(batch, name).to(device))
    return batch


def timed(fn, repeats: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_dtype(name: str, args: argparse.Namespace, batch, device: torch.device, oom: bool) -> tuple[float, float]:
    """(editor / raw throughput ratio, editor faces per second) at one dtype; the OOM check if asked."""
    from helpers import face_batch

    from editors.diffusion import DiffusionEditor
    from editors.diffusion.loading import torch_dtype
    from engine.faces import CropSpec
    from engine.faces.template import synthetic_faces
    from engine.pipeline.backoff import BatchBackoff

    pipe = build_pipeline(args.mode, args.scale, device, torch_dtype(name, device))
    editor = DiffusionEditor("unused", mode=args.mode, prompts=PROMPTS, steps=args.steps,
                             resolution=args.size, dtype=name, batch_size=args.batch)
    editor._pipe, editor._pipe_device = pipe, device  # the weights are built here, not loaded
    x = batch.images.float()
    kw = {"image_guidance_scale": editor.image_guidance_scale} if args.mode == "instruct" else {
        "strength": editor.denoise}
    if args.mode == "inpaint":
        kw["mask_image"] = torch.ones_like(x[:, :1])

    def raw() -> None:
        with torch.inference_mode():
            pipe(prompt=[PROMPTS["older"]] * len(x), image=x, num_inference_steps=args.steps,
                 guidance_scale=editor.guidance_scale, generator=batch.generators(0, "diffusion"),
                 output_type="pt", **kw)

    t_raw = timed(raw, args.repeats, device)
    t_edit = timed(lambda: editor.edit(batch, 1.0, seed=0), args.repeats, device)
    ratio = t_raw / t_edit
    print(f"{name}: raw {args.batch / t_raw:.3f} faces/s, editor {args.batch / t_edit:.3f} faces/s, "
          f"ratio {ratio:.3f} (target >= {TARGET})")
    if oom and args.oom_batch:
        big_crops, big_lms = synthetic_faces(args.oom_batch, CropSpec(size=args.size), seed=1, jitter=0.04)
        big = on_device(face_batch(big_crops, big_lms), device)
        editor.steps, editor.batch_size = 1, args.oom_batch
        backoff = BatchBackoff()
        t0 = time.perf_counter()
        done = backoff.run(lambda part: [editor.edit(big.select(list(part)), 1.0, 0)], range(args.oom_batch),
                           args.oom_batch, "diffusion", "editor=diffusion")
        fitted = backoff.fitted.get("diffusion", args.oom_batch)
        print(f"oom back-off: {args.oom_batch} faces asked in one call, fitted batch {fitted}, "
              f"{sum(len(d.images) for d in done)} faces done in {time.perf_counter() - t0:.1f} s")
    return ratio, args.batch / t_edit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=("full", "tiny"), default="full")
    p.add_argument("--mode", choices=("img2img", "inpaint", "instruct"), default="instruct")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=512, help="crop size and the model's resolution")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dtypes", nargs="+", default=None, help="default: fp16 fp32 on CUDA, fp32 on a CPU")
    p.add_argument("--oom-batch", type=int, default=0)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)

    from helpers import face_batch

    from engine.faces import CropSpec
    from engine.faces.template import synthetic_faces

    device = torch.device(args.device)
    dtypes = args.dtypes or (["fp16", "fp32"] if device.type == "cuda" else ["fp32"])
    crops, landmarks = synthetic_faces(args.batch, CropSpec(size=args.size), seed=0, jitter=0.04)
    batch = on_device(face_batch(crops, landmarks), device)
    print(f"# bench_diffusion scale={args.scale} mode={args.mode} device={device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}) batch={args.batch} "
          f"size={args.size} steps={args.steps} threads={torch.get_num_threads()}")
    missed, per_dtype = [], {}
    for name in dtypes:
        ratio, per_dtype[name] = bench_dtype(name, args, batch, device, oom=name == dtypes[0])
        if ratio < TARGET:
            missed.append(f"{name} ratio {ratio:.3f} < {TARGET}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if {"fp16", "fp32"} <= set(per_dtype):
        print(f"fp16 / fp32 editor throughput: {per_dtype['fp16'] / per_dtype['fp32']:.2f}x")
    for m in missed:
        print("MISSED", m)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
