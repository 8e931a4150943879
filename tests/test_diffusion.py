"""Diffusion editors on tiny pipelines built in code (tests/diffusion_tiny.py): no download, CPU, 2 steps."""

from __future__ import annotations

import sys

import pytest
import torch
from diffusion_tiny import TINY, tiny_model

from editors.diffusion import DiffusionEditor, DiffusionModelUnavailable
from editors.diffusion.regions import region_masks

MODES = ("img2img", "inpaint", "instruct", "ledits")


def editor(mode: str, **kw) -> DiffusionEditor:
    return DiffusionEditor(str(tiny_model(mode)), mode=mode, **{**TINY, **kw})


@pytest.fixture()
def faces():
    """Four synthetic faces at 64 px (the tiny pipelines work at 32 px)."""
    from helpers import face_batch

    from engine.faces import CropSpec
    from engine.faces.template import synthetic_faces

    crops, landmarks = synthetic_faces(4, CropSpec(size=64), seed=1, jitter=0.04)
    return face_batch(crops, landmarks)


@pytest.mark.parametrize("mode", MODES)
def test_edit_shape_determinism_batching_and_paste_back(mode, faces):
    ed = editor(mode)
    out = ed.edit(faces, 1.0, seed=7)
    assert out.images.shape == faces.images.shape and out.images.dtype == torch.float32
    assert out.mask.shape == (len(faces), 1, *faces.size)
    assert 0.0 <= float(out.images.min()) and float(out.images.max()) <= 1.0
    again = ed.edit(faces, 1.0, seed=7)
    torch.testing.assert_close(again.images, out.images, rtol=0, atol=0)
    other_seed = ed.edit(faces, 1.0, seed=8)
    assert (other_seed.images - out.images).abs().max() > 1e-3, "the seed must reach the noise"
    one_by_one = torch.cat([ed.edit(faces.select([i]), 1.0, seed=7).images for i in range(len(faces))])
    torch.testing.assert_close(one_by_one, out.images, rtol=0, atol=2e-5)
    outside = out.mask == 0
    assert outside.any() and (out.mask > 0.5).any()
    assert torch.equal(out.images[outside.expand_as(out.images)], faces.images[outside.expand_as(faces.images)])
    inside = (out.mask > 0.99).expand_as(out.images)
    assert (out.images[inside] - faces.images[inside]).abs().mean() > 0.01, "the region was not edited"


@pytest.mark.parametrize("mode", ["img2img", "inpaint", "instruct"])
def test_sham_is_strength_zero_and_shares_the_initial_noise(mode, faces, monkeypatch):
    ed = editor(mode)
    module = sys.modules[type(ed.pipeline(faces.device)).__module__]
    drawn: list[torch.Tensor] = []
    real = module.randn_tensor

    def spy(*args, **kwargs):
        noise = real(*args, **kwargs)
        drawn.append(noise.clone())
        return noise

    monkeypatch.setattr(module, "randn_tensor", spy)
    sham = ed.sham(faces, seed=3)
    n_sham = len(drawn)
    edit = ed.edit(faces, 1.0, seed=3)
    assert n_sham > 0 and len(drawn) == 2 * n_sham
    for a, b in zip(drawn[:n_sham], drawn[n_sham:]):
        assert torch.equal(a, b), "sham and edit must start from the same noise"
    assert sham.metadata[0]["sham"] == "neutral_prompt" and sham.metadata[0]["prompt"] == "a face"
    assert (edit.images - sham.images).abs().max() > 1e-4, "the prompt must reach the output"
    zero = ed.edit(faces, 0.0, seed=3)
    torch.testing.assert_close(zero.images, sham.images, rtol=0, atol=0)


def test_strength_maps_monotonically_onto_each_knob(faces, monkeypatch):
    seen: dict[str, list[float]] = {"denoise": [], "edit_guidance": [], "prompt": []}
    for knob, mode in (("denoise", "img2img"), ("edit_guidance", "ledits"), ("prompt", "instruct")):
        ed = editor(mode, knob=knob, steps=10 if knob == "denoise" else 2)
        real = ed._mode.run

        def spy(pipe, images, mask, cond, denoise, generators, settings, _real=real, _knob=knob, _ed=ed):
            if _knob == "denoise":
                seen[_knob].append(denoise)
            elif _knob == "edit_guidance":
                seen[_knob].append(settings["edit_weight"] * settings["edit_guidance_scale"])
            else:  # distance of the conditioning from the neutral prompt's
                neutral = _ed._encode(pipe, [_ed.prompts["neutral"]] * len(images))
                seen[_knob].append(float((cond.prompt - neutral).norm()))
            return _real(pipe, images, mask, cond, denoise, generators, settings)

        monkeypatch.setattr(ed._mode, "run", spy)
        for s in (0.25, 0.5, 1.0):
            ed.edit(faces.select([0]), s, seed=0)
    assert seen["denoise"] == pytest.approx([0.15, 0.3, 0.6])
    assert seen["edit_guidance"] == pytest.approx([1.25, 2.5, 5.0])
    assert seen["prompt"][0] < seen["prompt"][1] < seen["prompt"][2]
    assert seen["prompt"][1] == pytest.approx(seen["prompt"][2] / 2, rel=1e-4)


def test_denoise_knob_sham_is_the_vae_round_trip(faces):
    ed = editor("img2img", knob="denoise")
    sham = ed.sham(faces, seed=0)
    assert sham.metadata[0]["sham"] == "vae_roundtrip"
    assert (sham.images - faces.images).abs().max() > 1e-3  # the VAE is not lossless: that is what it controls


def test_gender_opposite_reads_metadata_and_tells_the_audit(faces):
    ed = editor("inpaint", property="gender", target="opposite")
    faces.metadata = [{"gender": g} for g in ("f", "m", "female", "man")]
    out = ed.edit(faces, 1.0, seed=0)
    assert [m["target"] for m in out.metadata] == ["male", "female", "male", "female"]
    assert [m["prompt"] for m in out.metadata] == ["a man", "a woman", "a man", "a woman"]
    policy = ed.audit_policy()
    assert policy.target.sign_key == "target" and policy.property == "gender"
    faces.metadata = [{}] * len(faces)
    with pytest.raises(ValueError, match="needs metadata"):
        ed.edit(faces, 1.0, seed=0)


def test_age_policy_and_bad_settings():
    older = editor("instruct").audit_policy()
    assert older.target.deltas == ("delta_est_age",) and older.target.sign == 1
    assert editor("instruct", direction="younger").audit_policy().target.sign == -1
    with pytest.raises(ValueError, match="knob"):
        editor("instruct", knob="denoise")
    with pytest.raises(ValueError, match="prompts lacks"):
        editor("instruct", prompts={"older": "x"})
    with pytest.raises(ValueError, match="multiple of 8"):
        editor("instruct", resolution=30)
    with pytest.raises(ValueError, match="property"):
        editor("instruct", property="glasses")


def test_missing_model_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ed = DiffusionEditor("nobody/not-a-model", mode="instruct", **TINY)
    with pytest.raises(DiffusionModelUnavailable) as err:
        ed.fingerprint()  # the engine takes every fingerprint at start-up: the error comes before any work
    text = str(err.value)
    assert "'nobody/not-a-model'" in text and "offline" in text and "editor.model=" in text
    assert "save_pretrained" in text and "hf download nobody/not-a-model" in text
    with pytest.raises(DiffusionModelUnavailable, match="not a diffusers folder"):
        DiffusionEditor(str(tmp_path / "nothing-here"), mode="instruct", **TINY).fingerprint()


def test_saved_folder_loads_runs_and_its_digest_keys_the_cache(tmp_path, faces):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_model("instruct"), folder)
    ed = DiffusionEditor(str(folder), mode="instruct", **TINY)
    before = ed.fingerprint()
    assert len(ed.edit(faces, 1.0, seed=0).images) == len(faces)
    config = folder / "unet" / "config.json"
    config.write_text(config.read_text().replace('"layers_per_block": 2', '"layers_per_block": 2 '))
    after = DiffusionEditor(str(folder), mode="instruct", **TINY).fingerprint()
    assert before["model_digest"] != after["model_digest"], "changed weights or configs must not reuse edits"


def test_region_masks_are_exactly_zero_outside_their_reach(faces):
    import cv2
    import numpy as np

    width = float(faces.landmarks[0, :, 0].max() - faces.landmarks[0, :, 0].min())
    for region in ("face", "skin", "mouth", "brows", "eyes", "nose"):
        hard, soft = region_masks(faces.landmarks, faces.size, region, grow=0.0, feather=0.03)
        k = max(1, round(0.03 * width))
        reach = 2 * 2**0.5 * k + 1.5  # the blur kernel's half-diagonal, and a pixel
        for part, value in ((hard[0, 0] == 0, 0.0), (hard[0, 0] > 0, 1.0)):
            depth = torch.from_numpy(cv2.distanceTransform(part.numpy().astype(np.uint8), cv2.DIST_L2, 5))
            deep = depth > reach
            assert (soft[0, 0][deep] == value).all(), f"{region}: the blend leaks ({value})"
            assert deep.any() or value == 1.0  # small regions (the mouth at 64 px) have no deep inside
    skin, _ = region_masks(faces.landmarks, faces.size, "skin")
    mouth, _ = region_masks(faces.landmarks, faces.size, "mouth")
    assert (skin * mouth).sum() < 0.05 * mouth.sum(), "the skin region leaves the lips out"
    with pytest.raises(ValueError, match="region"):
        region_masks(faces.landmarks, faces.size, "ears")


def test_age_shift_diffusion_experiment_end_to_end(run_experiment):
    """The whole experiment, as a user runs it, on the tiny pipeline saved in a folder (editor.model=<folder>)."""
    import json

    import pandas as pd

    summary, out = run_experiment(
        "experiment=age_shift_diffusion", f"editor.model={tiny_model('instruct')}", "editor.resolution=32",
        "editor.steps=2", "dataset.limit=4", "classifier=dummy", "strengths=[0.5,1.0]")
    for name in ("measurements.parquet", "stats.csv", "stats.json", "skipped.csv", "report.md",
                 "gallery/index.html", "audit.csv"):
        assert (out / name).exists(), name
    m = pd.read_parquet(out / "measurements.parquet")
    faces = m["image_id"].nunique()
    assert faces >= 3 and set(m["condition"]) == {"original", "sham", "edit"}
    assert sorted(m.loc[m["condition"] == "edit", "strength"].unique()) == [0.5, 1.0]
    audit = pd.read_csv(out / "audit.csv")
    assert (audit["lpips_sham_original"] > 0).all(), "the sham is not the input: its own change is measured"
    assert audit["edit_prompt"].str.contains("older").all()  # the experiment's own prompt reached the edits
    artefact = pd.read_csv(out / "stats_artefact.csv")
    assert not artefact["degenerate"].all(), "sham and original differ, so the artefact row is testable"
    assert "LPIPS between sham and original" in (out / "report.md").read_text()
    stamp = json.loads((out / "stats.json").read_text())["stamp"]
    assert stamp["config"]["editor"]["model"] == str(tiny_model("instruct"))
    assert summary.headline in (out / "report.md").read_text()


def test_diffusion_benchmark_runs_on_the_tiny_pipeline():
    """benchmarks/bench_diffusion.py (the GPU check's engine) on CPU at tiny scale: it must not rot unrun."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_diffusion.py", "--scale", "tiny", "--device", "cpu", "--batch", "2",
         "--size", "64", "--steps", "2", "--repeats", "1", "--oom-batch", "3"],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fp32: raw" in proc.stdout and "ratio" in proc.stdout
    assert "oom back-off: 3 faces asked in one call, fitted batch 3, 3 faces done" in proc.stdout


def test_another_pipeline_plugs_in_as_a_mode_through_target(faces):
    """A user's own adapter, wired by Hydra `_target_` like every plugin."""
    from hydra.utils import instantiate

    ed = instantiate({"_target_": "editors.diffusion.DiffusionEditor", "model": str(tiny_model("img2img")),
                      "mode": {"_target_": "diffusion_tiny.HalfDenoise"}, **{**TINY, "steps": 4}})
    out = ed.edit(faces, 1.0, seed=0)
    assert ed.mode == "halfdenoise" and ed.fingerprint()["mode"] == "HalfDenoise"
    assert out.images.shape == faces.images.shape
