"""PyEmotion's NetworkV2 (PyPI `PyEmotion==1.0.0`, MIT): a small CNN with sigmoid outputs.

The asset `pyemotion_netv2` is the package's `main_model.pkl`, a `torch.save` of a training checkpoint
(`network`, optimiser state, `epochs`, `accuracy`). It is read with `torch.load(weights_only=True)`,
so no code from the pickle runs, and `['network']` is the state dict. The network is rebuilt here from
the shapes in that state dict:

    input 48x48 grey, (x/255 - 0.5) / 0.5
    4 blocks: reflection pad 1, conv 3x3 (+bias), BatchNorm, ReLU; stride 1, then 2, 2, 2
        widths nl, 2nl, 4nl, 8nl (nl = 32)                          -> 8nl x 6 x 6
    flatten, linear 9216 -> 256, ReLU, linear 256 -> 7, sigmoid

The index-0 entry of each block holds no weights; that it is a reflection pad (not a zero pad) comes
from the package's source, and it keeps the 48 -> 48 -> 24 -> 12 -> 6 sizes the linear layer needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from classifiers.assets import PYEMOTION_NETV2

from .package_inputs import check_fidelity, pyemotion_inputs
from .torch_model import TorchClassifier

ASSET = PYEMOTION_NETV2
#: Output order of the package (its `emotions` dict, ids 0..6).
PYEMOTION_LABELS = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
INPUT_SIZE = 48


def _block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReflectionPad2d(1),
        nn.Conv2d(in_channels, out_channels, 3, stride=stride),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class PyEmotionNet(nn.Module):
    """The NetworkV2 graph; `forward` takes `(N, in_channels, 48, 48)` in [-1, 1], returns sigmoids.

    Args:
        in_channels: input channels (1: grey).
        width: channels of the first block; blocks 2-4 have 2x, 4x, 8x.
        hidden: units of the hidden linear layer.
        num_classes: outputs.
        input_size: input side; the flattened features are 8 * width * (input_size / 8) ** 2.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        hidden: int = 256,
        num_classes: int = 7,
        input_size: int = 48,
    ) -> None:
        super().__init__()
        if input_size % 8:
            raise ValueError(f"PyEmotionNet.input_size must be a multiple of 8, got {input_size}")
        self.conv_1 = _block(in_channels, width, 1)
        self.conv_2 = _block(width, 2 * width, 2)
        self.conv_3 = _block(2 * width, 4 * width, 2)
        self.conv_4 = _block(4 * width, 8 * width, 2)
        side = input_size // 8
        self.linear = nn.Sequential(
            nn.Linear(8 * width * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_4(self.conv_3(self.conv_2(self.conv_1(x))))
        return self.linear(x.flatten(1))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> PyEmotionNet:
        """Size the network from a state dict's tensor shapes (and check that they are consistent)."""
        try:
            first = state["conv_1.1.weight"]  # (width, in_channels, 3, 3)
            hidden, features = state["linear.0.weight"].shape
            num_classes = state["linear.2.weight"].shape[0]
        except KeyError as exc:
            raise ValueError(
                f"PyEmotionNet: the state dict has no {exc}; keys: {list(state)[:8]}..."
            ) from None
        width, in_channels = int(first.shape[0]), int(first.shape[1])
        for i, mult in enumerate((2, 4, 8), start=2):
            got = tuple(state[f"conv_{i}.1.weight"].shape[:2])
            if got != (mult * width, mult // 2 * width):
                raise ValueError(
                    f"PyEmotionNet: conv_{i} has shape {got}, expected {(mult * width, mult // 2 * width)}"
                )
        side = round((features / (8 * width)) ** 0.5)
        if 8 * width * side * side != features:
            raise ValueError(f"PyEmotionNet: linear input {features} is not 8 * {width} * side^2")
        return cls(in_channels, width, int(hidden), int(num_classes), input_size=8 * side)


class PyEmotionNetV2(TorchClassifier):
    """PyEmotion's NetworkV2, a 2.75M-parameter CNN on 48x48 grey faces (7 emotions).

    **Its outputs are independent sigmoids, normalised here by their row sum into a distribution.**
    The network was trained with per-class sigmoid outputs, so its seven scores do not sum to 1 (on
    the 93 aligned demo faces the row sums ran from 0.03 to 1.81, median 1.00, 5-95 % 0.16-1.26).
    With `normalise_sigmoid=True` (the default) each row is divided by its sum, so that label-change
    and entropy statistics see a distribution like the other models' (`output_kind` "softmax"). This is a rescaling, not a calibration: it couples the scores (raising
    one lowers the others), which the raw sigmoids do not. Set `normalise_sigmoid=False` to analyse the
    raw scores (`output_kind` "sigmoid").

    Args:
        fidelity: "package" builds each input with PyEmotion's own steps (8-bit grey of the frame, the
            face box cut as it is and stretched to 48 x 48 by PIL; `classifiers.package_inputs`);
            "engine" uses the engine's batched route (a square around the box, float grey).
        box_scale: (engine fidelity) side of the square face crop relative to the longer side of the
            face box. The package crops MTCNN boxes, which are about as tight as the landmark box, hence 1.0.
        normalise_sigmoid: divide the sigmoid scores by their row sum (see above).
        batch_size: largest batch the runner should try first.
        allow_tf32: let CUDA use TF32 for the convolutions (faster, ~1e-3 less exact); off by default.
    """

    def __init__(
        self,
        fidelity: str = "package",
        box_scale: float = 1.0,
        normalise_sigmoid: bool = True,
        batch_size: int = 256,
        allow_tf32: bool = False,
    ) -> None:
        super().__init__(
            labels=PYEMOTION_LABELS,
            preprocessing={
                "crop": "face_box",
                "size": INPUT_SIZE,
                "colour": "grey",
                "mean": 0.5,
                "std": 0.5,
                "layout": "nchw",
                "box_scale": box_scale,
            },
            checkpoint=f"asset:{ASSET}",
            state_dict_key="network",
            activation="sigmoid",
            applied_in_model=True,
            normalise_sigmoid=normalise_sigmoid,
            name="pyemotion_netv2",
            batch_size=batch_size,
            allow_tf32=allow_tf32,
            channels_last=True,  # 1.3x on a CPU, the same outputs to ~1e-6
        )
        self.box_scale = float(box_scale)
        self.fidelity = check_fidelity("PyEmotionNetV2", fidelity)

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if self.fidelity == "engine":
            return super().preprocess(images, boxes)
        self.model  # noqa: B018 - load before timing-sensitive work, and fail early
        return pyemotion_inputs(images, boxes, INPUT_SIZE)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "fidelity": self.fidelity}

    def _builds_own_model(self) -> bool:
        return True

    def _build_module(self, state: dict[str, torch.Tensor] | None) -> nn.Module:
        assert state is not None
        return PyEmotionNet.from_state_dict(state)

    def _weights_identity(self) -> Any:
        from engine.assets import get_asset

        return {
            "asset": ASSET,
            "sha256": get_asset(ASSET).sha256,
            "key": "network",
            "allow_tf32": self.allow_tf32,
            "channels_last": self.channels_last,
        }
