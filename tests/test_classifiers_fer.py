"""Built-in classifiers and shared preprocessing: conversion, portraits, preprocessing, controls."""

from __future__ import annotations

import json
import math

import h5py
import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf
from PIL import Image

from classifiers.dummy import DummyClassifier
from classifiers.fer_minixception import KERAS_LABELS, FerMiniXception, _tf_same_padding, load_minixception
from classifiers.preprocess import Preprocessing, activate, normalise_sigmoid, to_probabilities
from classifiers.probe import AsymmetryProbe
from engine.assets import asset_path
from engine.types import stable_hash

# Measured once with the MediaPipe Face Landmarker (face_landmarker asset) on the source images:
# landmark bounding box (x0, y0, x1, y1) and iris centres (landmarks 468, 473), in source pixels.
PORTRAITS = {
    "astronaut": {"box": (180.7, 71.8, 270.2, 177.4), "eyes": ((203.5, 101.1), (246.0, 103.5))},
    "grace_hopper": {"box": (170.0, 132.3, 355.4, 334.6), "eyes": ((223.0, 192.2), (306.5, 187.3))},
}
CANONICAL_7 = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def load_portrait(name: str) -> torch.Tensor:
    if name == "astronaut":
        array = skimage.data.astronaut()
    else:
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            array = np.asarray(Image.open(f).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


def aligned_portrait(name: str, size: int = 384) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop like the engine's: eyes horizontal, inter-ocular 0.3 * size, face box centred."""
    image, info = load_portrait(name), PORTRAITS[name]
    left, right = np.array(info["eyes"][0]), np.array(info["eyes"][1])
    delta = right - left
    scale, angle = 0.3 * size / np.hypot(*delta), -np.arctan2(delta[1], delta[0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    x0, y0, x1, y1 = info["box"]
    shift = np.full(2, size / 2) - rot @ np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    crop_to_source = np.linalg.inv(np.vstack([np.column_stack([rot, shift]), [0, 0, 1]]))[:2]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    src = torch.stack([xs, ys, torch.ones_like(xs)], -1).double() @ torch.from_numpy(crop_to_source).T
    height, width = image.shape[-2:]
    grid = torch.stack([src[..., 0] / width * 2 - 1, src[..., 1] / height * 2 - 1], -1).float()[None]
    crop = torch.nn.functional.grid_sample(image[None], grid, align_corners=False)[0]
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) @ rot.T + shift
    return crop, torch.tensor(np.concatenate([corners.min(0), corners.max(0)]), dtype=torch.float32)


@pytest.fixture(scope="module")
def fer() -> FerMiniXception:
    return FerMiniXception()


@pytest.fixture(scope="module")
def portraits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name/view -> (image (3, H, W), box (4,)) for both portraits, as source photos and aligned crops."""
    out = {}
    for name in PORTRAITS:
        out[f"{name}/source"] = (load_portrait(name), torch.tensor(PORTRAITS[name]["box"]))
        out[f"{name}/aligned"] = aligned_portrait(name)
    return out


# --- numpy reference of the Keras graph ----------------------------------------------------------------


def _np_same_pad(x: np.ndarray, kernel, strides, padding: str, value: float) -> np.ndarray:
    if padding == "valid":
        return x
    pads = []
    for axis in (0, 1):
        size, k, s = x.shape[1 + axis], kernel[axis], strides[axis]
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)


def _np_windows(x: np.ndarray, kernel, strides) -> np.ndarray:
    """NHWC -> (N, Ho, Wo, C, kh, kw) sliding windows."""
    windows = np.lib.stride_tricks.sliding_window_view(x, tuple(kernel), axis=(1, 2))
    return windows[:, :: strides[0], :: strides[1]]


def keras_reference(path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 forward of the HDF5's own `model_config` graph; returns every layer's output by name."""
    with h5py.File(path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]

        def w(layer: str, leaf: str) -> np.ndarray:
            group = f["model_weights"][layer]
            return group[next(iter(group))][leaf][()].astype(np.float64)

        outputs: dict[str, np.ndarray] = {}
        for layer in layers:
            kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
            inputs = (
                [outputs[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [x]
            )
            h = inputs[0]
            if kind == "InputLayer":
                y = x
            elif kind in ("Conv2D", "SeparableConv2D"):
                k, s = cfg["kernel_size"], cfg["strides"]
                win = _np_windows(_np_same_pad(h, k, s, cfg["padding"], 0.0), k, s)
                if kind == "Conv2D":
                    y = np.einsum("nhwcij,ijco->nhwo", win, w(name, "kernel:0"))
                else:
                    y = np.einsum("nhwcij,ijc->nhwc", win, w(name, "depthwise_kernel:0")[..., 0])
                    y = y @ w(name, "pointwise_kernel:0")[0, 0]
                if cfg["use_bias"]:
                    y = y + w(name, "bias:0")
            elif kind == "BatchNormalization":
                inv = w(name, "gamma:0") / np.sqrt(w(name, "moving_variance:0") + cfg["epsilon"])
                y = (h - w(name, "moving_mean:0")) * inv + w(name, "beta:0")
            elif kind == "Activation" and cfg["activation"] == "relu":
                y = np.maximum(h, 0.0)
            elif kind == "Activation" and cfg["activation"] == "softmax":
                e = np.exp(h - h.max(axis=1, keepdims=True))
                y = e / e.sum(axis=1, keepdims=True)
            elif kind == "MaxPooling2D":
                k, s = cfg["pool_size"], cfg["strides"]
                y = _np_windows(_np_same_pad(h, k, s, cfg["padding"], -np.inf), k, s).max(axis=(-2, -1))
            elif kind == "Add":
                y = sum(inputs)
            elif kind == "GlobalAveragePooling2D":
                y = h.mean(axis=(1, 2))
            else:
                raise NotImplementedError(f"{kind} in {name}")
            outputs[name] = y
    return outputs


def test_conversion_matches_numpy_reference_of_keras_graph():
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 64, 64, 1))
    ref = keras_reference(asset_path("fer_minixception"), x)
    model = load_minixception()
    inputs = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        stem_block = model.stem[:3](inputs).permute(0, 2, 3, 1).double().numpy()
        logits = model(inputs).double()
    assert np.abs(stem_block - ref["activation_1"]).max() < 1e-5
    assert np.abs(logits.numpy() - ref["global_average_pooling2d_1"]).max() < 1e-4  # logits reach ~13
    assert np.abs(torch.softmax(logits, 1).numpy() - ref["predictions"]).max() < 1e-5


def test_tf_same_padding_puts_the_extra_pixel_after():
    assert _tf_same_padding(60, 3, 2) == (0, 1)
    assert _tf_same_padding(15, 3, 2) == (1, 1)  # odd sides pad both ends: not always (0, 1)
    assert _tf_same_padding(64, 1, 2) == (0, 0)


def test_labels_are_canonical_in_keras_order():
    assert FerMiniXception.labels == CANONICAL_7
    assert len(KERAS_LABELS) == 7 and KERAS_LABELS[3] == "happy"


def test_instantiation_is_cheap_and_fingerprint_is_json():
    clf = FerMiniXception(box_scale=1.3, batch_size=32)
    assert clf._model is None
    fp = clf.fingerprint()
    json.dumps(fp)
    assert fp["box_scale"] == 1.3 and fp["allow_tf32"] is False and "batch_size" not in fp
    assert stable_hash(fp) != stable_hash(FerMiniXception().fingerprint())
    with pytest.raises(ValueError, match="batch_size"):
        FerMiniXception(batch_size=0)
    with pytest.raises(ValueError, match="box_scale"):
        FerMiniXception(box_scale=-1)


@pytest.mark.parametrize("view", ["source", "aligned"])
def test_fer_on_portraits(fer, portraits, view):
    probs = torch.cat(
        [
            fer.predict(fer.preprocess(im[None], box[None]))
            for im, box in (portraits[f"{n}/{view}"] for n in PORTRAITS)
        ]
    )
    assert probs.shape == (2, 7)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    happy = fer.labels.index("happiness")
    # Eileen Collins smiles broadly (MediaPipe mouthSmile ~0.9).
    assert probs[0].argmax() == happy and probs[0, happy] > 0.95
    # Grace Hopper's mouth is closed and barely curved (MediaPipe mouthSmile < 0.01): the model says neutral.
    assert fer.labels[int(probs[1].argmax())] == "neutral" and probs[1, happy] < 0.1
    if view == "aligned":  # equal-size crops: a batch must equal one-by-one
        images = torch.stack([portraits[f"{n}/aligned"][0] for n in PORTRAITS])
        boxes = torch.stack([portraits[f"{n}/aligned"][1] for n in PORTRAITS])
        torch.testing.assert_close(fer.predict(fer.preprocess(images, boxes)), probs, atol=1e-6, rtol=0)


# --- preprocessing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"crop": "face"}, "crop"),
        ({"colour": "gray"}, "colour"),
        ({"layout": "chw"}, "layout"),
        ({"size": 0}, "size"),
        ({"size": 64.0}, "size"),
        ({"box_scale": 0}, "box_scale"),
        ({"mean": [0.5, 0.5, 0.5]}, "mean"),  # 3 values but grey has 1 channel
        ({"std": 0.0}, "std"),
        ({"colour": "rgb", "std": [1, 2]}, "std"),
    ],
)
def test_preprocessing_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Preprocessing(**kwargs)


def test_preprocessing_from_hydra_config():
    cfg = OmegaConf.create(
        {"colour": "rgb", "size": 8, "mean": [0.485, 0.456, 0.406], "std": [0.2, 0.2, 0.2]}
    )
    prep = Preprocessing.from_config(cfg)
    assert prep.mean == (0.485, 0.456, 0.406)
    json.dumps(prep.to_dict())
    with pytest.raises(ValueError, match="sise"):
        Preprocessing.from_config({"sise": 3})


def _grey_numpy(image: torch.Tensor) -> np.ndarray:
    return (image.numpy() * np.array([0.299, 0.587, 0.114])[:, None, None]).sum(0).astype(np.float32)


def _pil_reference(image: np.ndarray, region, size: int) -> np.ndarray:
    """What a researcher's PIL loop does: crop the whole-pixel square, resize bilinear (antialiased)."""
    pil = Image.fromarray(image, mode="F" if image.dtype == np.float32 else None)
    return np.asarray(pil.crop(tuple(region)).resize((size, size), Image.BILINEAR), dtype=np.float32)


@pytest.mark.parametrize("route", ["per_image", "matmul"])
@pytest.mark.parametrize("size", [300, 64, 48])  # up-scaling and 2-6x down-scaling
@pytest.mark.parametrize("name", list(PORTRAITS))
def test_preprocessing_matches_pil(portraits, name, size, route, monkeypatch):
    monkeypatch.setattr(Preprocessing, "resize_route", route)
    image, box = portraits[f"{name}/source"]
    prep = Preprocessing(size=size, colour="rgb", box_scale=1.2)
    region = prep.pixel_regions(box[None], *image.shape[-2:])[0].tolist()
    u8 = image.mul(255).round().to(torch.uint8)
    ours = prep.apply(u8[None], box[None])[0].permute(1, 2, 0).numpy() * 255
    reference = _pil_reference(u8.permute(1, 2, 0).numpy(), region, size)
    # Both routes round each resize pass to grey levels as PIL does (fixed-point details differ).
    assert np.abs(ours - reference).max() <= 1.0 + 1e-3
    assert np.abs(ours - reference).mean() < 0.05
    # Float input: PIL's float ("F") resize of the grey image, to float precision.
    grey = Preprocessing(size=size, colour="grey", box_scale=1.2).apply(image[None], box[None])[0, 0].numpy()
    assert np.abs(grey - _pil_reference(_grey_numpy(image), region, size)).max() < 1e-4


def test_preprocessing_routes_agree_at_the_edges(monkeypatch):
    # Squares reaching outside the image on every side read black there, by either route.
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 50, 40), dtype=torch.uint8, generator=gen)
    boxes = torch.tensor([[-10.0, -5.0, 20.0, 30.0], [25.0, 30.0, 60.0, 70.0], [-30.0, -30.0, -5.0, -5.0],
                          [0.0, 0.0, 40.0, 50.0]])
    prep = Preprocessing(colour="rgb", size=24, box_scale=1.0)
    out = {}
    for route in ("per_image", "matmul"):
        monkeypatch.setattr(Preprocessing, "resize_route", route)
        out[route] = prep.apply(images, boxes)
    assert (out["per_image"] - out["matmul"]).abs().max() <= 1.0 / 255 + 1e-5
    assert out["matmul"][2].abs().max() == 0  # wholly outside: black
    region = prep.pixel_regions(boxes[:1], 50, 40)[0].tolist()
    padded = np.zeros((region[3] - region[1], region[2] - region[0], 3), dtype=np.uint8)
    padded[-region[1]:, -region[0]:] = images[0, :, : region[3], : region[2]].permute(1, 2, 0).numpy()
    ref = _pil_reference(padded, (0, 0, padded.shape[1], padded.shape[0]), 24)
    assert np.abs(out["matmul"][0].permute(1, 2, 0).numpy() * 255 - ref).max() <= 1.0 + 1e-3


def test_preprocessing_antialiases_downscaling():
    # A one-pixel checkerboard downscaled 4x must average to flat grey, not alias into stripes.
    checker = ((torch.arange(256)[:, None] + torch.arange(256)[None, :]) % 2).float()
    image = checker.expand(1, 3, 256, 256)
    out = Preprocessing(crop="full", size=64, colour="grey").apply(image, torch.zeros(1, 4))
    # Interior exact; the border row and column renormalise a truncated triangle (as PIL does).
    assert (out[..., 1:-1, 1:-1] - 0.5).abs().max() < 1e-5
    assert (out - 0.5).abs().max() < 3e-3


def test_preprocessing_colour_layout_and_normalisation():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 40, 50, generator=gen)
    boxes = torch.tensor([[5.0, 5.0, 25.0, 35.0], [0.0, 0.0, 50.0, 40.0], [30.0, 10.0, 45.0, 20.0]])
    rgb = Preprocessing(colour="rgb", size=16).apply(images, boxes)
    grey = Preprocessing(colour="grey", size=16).apply(images, boxes)
    assert rgb.shape == (3, 3, 16, 16) and grey.shape == (3, 1, 16, 16)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close(grey, (rgb * luma).sum(1, keepdim=True), atol=1e-6, rtol=0)
    grey3 = Preprocessing(colour="grey3", size=16, mean=0.5, std=0.25, layout="nhwc").apply(images, boxes)
    assert grey3.shape == (3, 16, 16, 3)
    torch.testing.assert_close(grey3, ((grey - 0.5) / 0.25).permute(0, 2, 3, 1).expand(-1, -1, -1, 3))
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    norm = Preprocessing(colour="rgb", size=16, mean=mean, std=std).apply(images, boxes)
    torch.testing.assert_close(
        norm, (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    )
    # Batched equals one-by-one: each image is resized on its own.
    prep = Preprocessing(colour="rgb", size=16, box_scale=1.5)
    single = torch.cat([prep.apply(images[i : i + 1], boxes[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(prep.apply(images, boxes), single, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="boxes"):
        prep.apply(images, boxes[:2])


def test_face_box_crop_is_square_around_box_centre():
    prep = Preprocessing(box_scale=1.5)
    region = prep.crop_boxes(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), 100, 100)
    torch.testing.assert_close(region, torch.tensor([[-10.0, 10.0, 50.0, 70.0]]))


def test_activation_helpers():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(to_probabilities(logits, "logits"), torch.softmax(logits, 1))
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(to_probabilities(probs, "softmax"), probs)
    scores = torch.tensor([[0.9, 0.3, 0.3]])
    torch.testing.assert_close(to_probabilities(scores, "sigmoid"), scores)
    torch.testing.assert_close(
        to_probabilities(scores, "sigmoid", normalise=True), torch.tensor([[0.6, 0.2, 0.2]])
    )
    torch.testing.assert_close(normalise_sigmoid(scores).sum(1), torch.ones(1))
    torch.testing.assert_close(activate(logits, "sigmoid"), torch.sigmoid(logits))
    with pytest.raises(ValueError, match="output_kind"):
        to_probabilities(logits, "probs")


# --- placebo and probe ------------------------------------------------------------------------------------


def test_dummy_is_deterministic_and_depends_on_pixels(portraits):
    image, box = portraits["astronaut/aligned"]
    a, b, other = DummyClassifier(seed=3), DummyClassifier(seed=3), DummyClassifier(seed=4)
    pa = a.predict(a.preprocess(image[None], box[None]))
    torch.testing.assert_close(pa, b.predict(b.preprocess(image[None], box[None])), atol=0, rtol=0)
    assert not torch.allclose(pa, other.predict(other.preprocess(image[None], box[None])))
    torch.testing.assert_close(pa.sum(1), torch.ones(1))
    edited = image.clone()
    edited[:, 250:330, 120:260] *= 0.5  # darken the mouth region
    assert (a.predict(a.preprocess(edited[None], box[None])) - pa).abs().max() > 1e-3
    assert a.labels == CANONICAL_7 and a.fingerprint()["seed"] == 3


def test_probe_responds_monotonically_to_symmetry(portraits):
    image, _ = portraits["grace_hopper/aligned"]
    size = image.shape[-1]
    # Mirror the left half about the crop's centre line: a perfectly symmetric face.
    symmetric = torch.cat([image[..., : size // 2], image[..., : size // 2].flip(-1)], dim=-1)
    asymmetric = image.clone()
    asymmetric[..., : size // 2] *= 0.6  # one side in shadow
    box = torch.tensor([[48.0, 48.0, size - 48.0, size - 48.0]])  # symmetric about the centre line
    probe = AsymmetryProbe()
    happy = probe.labels.index("happiness")
    mix = torch.linspace(0, 1, 6).view(-1, 1, 1, 1)
    batch = torch.cat([symmetric[None] + mix * (image - symmetric), image[None] + mix * (asymmetric - image)])
    probs = probe.predict(probe.preprocess(batch, box.expand(len(batch), 4)))
    torch.testing.assert_close(probs.sum(1), torch.ones(len(batch)))
    happiness = probs[:, happy]
    # The symmetric face has zero asymmetry, the top of the curve: sigmoid(centre / width).
    assert abs(happiness[0].item() - 1 / (1 + math.exp(-probe.centre / probe.width))) < 1e-4
    assert (happiness[:6].diff() < 0).all() and (happiness[6:].diff() < 0).all()
    assert happiness[-1] < happiness[5] - 0.2
    others = probs[:, [i for i in range(7) if i != happy]]
    torch.testing.assert_close(others, ((1 - happiness) / 6).unsqueeze(1).expand(-1, 6))
