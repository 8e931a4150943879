"""Every editor honours the Editor contract: what it declares to the core is true of what it does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import conf
from engine.pipeline.steps import to_uint8
from engine.spec import check_policy
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch

EDITOR_CONFIGS = sorted((Path(conf.__file__).parent / "editor").glob("*.yaml"))
#: Settings beyond each config's defaults that change what the pipeline does at strength 0.
VARIANTS = {
    "age": [{"direction": "younger"}, {"greying": 0.5}],
    "gender": [{"target": "male"}, {"target": "opposite"}],
    "symmetry": [{"mode": "shape"}, {"mode": "texture"}, {"source_side": "left"}],
    "asymmetry": [{"side": "auto"}],
    "semg": [{"scheme": "kuramoto"}],
    "nuisance": [{"matched": {"_target_": "editors.age.AgeEditor"}},
                 {"matched": {"_target_": "editors.symmetry.AsymmetryEditor"}}],
    "diffusion": [{"mode": "inpaint", "property": "gender", "target": "opposite"},
                  {"mode": "img2img", "knob": "denoise"}, {"mode": "ledits"}],
}


def _local(stem: str, settings: dict) -> dict:
    """Diffusion editors run on the tiny pipeline of their mode (built in code, no download)."""
    if stem != "diffusion":
        return settings
    from diffusion_tiny import TINY, tiny_model

    return {**settings, **TINY, "model": str(tiny_model(settings["mode"]))}


def _editors() -> list[tuple[str, Editor]]:
    from hydra.utils import instantiate

    out = []
    for path in EDITOR_CONFIGS:
        base = OmegaConf.to_container(OmegaConf.load(path))
        for extra in [{}, *VARIANTS.get(path.stem, [])]:
            label = path.stem + "".join(f"-{k}={v}" for k, v in extra.items())
            out.append((label, instantiate(_local(path.stem, {**base, **extra}))))
    return out


EDITORS = _editors()


def _with_gender(batch: FaceBatch) -> FaceBatch:
    batch.metadata = [{"gender": "f" if i % 2 else "m"} for i in range(len(batch))]
    return batch


@pytest.mark.parametrize(("label", "editor"), EDITORS, ids=[e[0] for e in EDITORS])
def test_declared_sham_is_the_input_on_synthetic_faces(label, editor, tiny_face_batch):
    batch = _with_gender(tiny_face_batch)
    full = editor.edit(batch, 0.0, seed=3)
    assert isinstance(full, EditResult) and full.images.shape == batch.images.shape
    if editor.sham_is_input:
        assert (to_uint8(full.images) == to_uint8(batch.images)).all(), f"{label}: the pipeline at 0 changes pixels"
        sham = editor.sham(batch, seed=3)
        assert torch.equal(sham.images, batch.images) and not sham.mask.any()


@pytest.mark.parametrize(("label", "editor"), EDITORS[:: max(1, len(EDITORS) // 6)],
                         ids=[e[0] for e in EDITORS[:: max(1, len(EDITORS) // 6)]])
def test_declared_sham_is_the_input_on_real_faces(label, editor, real_faces):
    batch = _with_gender(real_faces(4, 256))
    if editor.sham_is_input:
        full = editor.edit(batch, 0.0, seed=3)
        assert (to_uint8(full.images) == to_uint8(batch.images)).all(), f"{label}: the pipeline at 0 changes pixels"


@pytest.mark.parametrize(("label", "editor"), EDITORS, ids=[e[0] for e in EDITORS])
def test_policy_names_real_thresholds_and_readings(label, editor):
    policy = editor.audit_policy()
    assert isinstance(policy, AuditPolicy) and policy.property == editor.property
    check_policy(policy, editor)  # raises on a threshold the audit does not have
    deltas = getattr(policy.target, "deltas", ())
    assert all(d.startswith("delta_") for d in deltas)


def test_an_editor_that_lies_about_its_sham_is_caught(tiny_face_batch):
    class Brightens(Editor):
        property = "brightness"
        sham_is_input = True

        def edit(self, batch, strength, seed):
            return EditResult((batch.images + 0.05).clamp(0, 1), torch.ones_like(batch.images[:, :1]))

    full = Brightens().edit(tiny_face_batch, 0.0, seed=0)
    assert not (to_uint8(full.images) == to_uint8(tiny_face_batch.images)).all()


PROCEDURAL = [(label, editor) for label, editor in EDITORS if "-" not in label and label != "diffusion"]


@pytest.mark.parametrize(("label", "editor"), PROCEDURAL, ids=[e[0] for e in PROCEDURAL])
def test_an_edit_does_not_depend_on_its_batch_or_the_threads(label, editor, real_faces):
    """Bit for bit: the cache keys an edit by its face, and overlapping stages run on fewer threads
    than a plain run, so neither the batch around a face nor the thread count may move a pixel.
    (Diffusion pipelines are held to 2e-5 in tests/test_diffusion.py.)"""
    batch = _with_gender(real_faces(3, 256))
    together = editor.edit(batch, 1.0, seed=3).images
    alone = torch.cat([editor.edit(batch.select([i]), 1.0, seed=3).images for i in range(len(batch))])
    assert torch.equal(together, alone), f"{label}: max {float((together - alone).abs().max()):.2g}"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = editor.edit(batch, 1.0, seed=3).images
    finally:
        torch.set_num_threads(threads)
    assert threads == 1 or torch.equal(together, one_thread), f"{label}: threads move pixels"
