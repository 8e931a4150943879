"""Shared, batched, on-device classifier preprocessing and output activations.

Every backend declares its input in config as a `Preprocessing` (crop, size, colour, normalisation,
layout), so a swap of backends never hides a preprocessing difference in code. `Preprocessing.apply`
turns engine crops `(N, 3, H, W)` in [0, 1] plus face boxes into model inputs in one batched pass on
the images' device: grey conversion, then crop and resize together through
`torchvision.ops.roi_align`, then normalisation and layout.

Outputs are turned into probabilities with `to_probabilities`; `normalise_sigmoid` is the
documented, opt-in way to make independent sigmoid scores sum to 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.ops import roi_align

CROPS = ("face_box", "full")
COLOURS = ("grey", "rgb", "grey3")
LAYOUTS = ("nchw", "nhwc")
OUTPUT_KINDS = ("softmax", "sigmoid", "logits")

#: ITU-R BT.601 luma weights for R, G, B (what OpenCV and PIL use for grey).
LUMA_601 = (0.299, 0.587, 0.114)


def _as_floats(name: str, value: Any) -> float | tuple[float, ...]:
    """Accept a number or a sequence of 3 numbers (OmegaConf ListConfig included)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, (str, bytes, Mapping)) and isinstance(value, (Sequence, Iterable)):
        items = list(value)
        if len(items) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            return tuple(float(v) for v in items)
    raise ValueError(f"Preprocessing.{name} must be a number or a list of 3 numbers, got {value!r}")


@dataclass
class Preprocessing:
    """How a classifier wants its input, declared in config.

    Attributes:
        crop: "face_box" (a square centred on the face box, side = max(w, h) * `box_scale`) or
            "full" (the whole image, resized to `size` x `size`).
        size: output side in pixels.
        colour: "grey" (1 channel, BT.601 luma), "rgb" or "grey3" (luma copied to 3 channels).
        mean: subtracted from the [0, 1] input; a number or one value per channel (3-list).
        std: divides after `mean`; a number or a 3-list. 0.5/0.5 maps [0, 1] to [-1, 1].
        layout: "nchw" or "nhwc" for the returned tensor.
        box_scale: side of the square face crop relative to the longer side of the face box.
    """

    crop: str = "face_box"
    size: int = 64
    colour: str = "grey"
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    layout: str = "nchw"
    box_scale: float = 1.2

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"Preprocessing.crop must be one of {CROPS}, got {self.crop!r}")
        if self.colour not in COLOURS:
            raise ValueError(f"Preprocessing.colour must be one of {COLOURS}, got {self.colour!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"Preprocessing.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Preprocessing.size must be a positive int, got {self.size!r}")
        if (
            isinstance(self.box_scale, bool)
            or not isinstance(self.box_scale, (int, float))
            or self.box_scale <= 0
        ):
            raise ValueError(f"Preprocessing.box_scale must be a positive number, got {self.box_scale!r}")
        self.box_scale = float(self.box_scale)
        self.mean = _as_floats("mean", self.mean)
        self.std = _as_floats("std", self.std)
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, tuple) and self.colour == "grey":
                raise ValueError(
                    f"Preprocessing.{name} has 3 values {value!r} but colour='grey' has 1 channel"
                )
        stds = self.std if isinstance(self.std, tuple) else (self.std,)
        if any(s <= 0 for s in stds):
            raise ValueError(f"Preprocessing.std must be positive, got {self.std!r}")

    @classmethod
    def from_config(cls, config: Preprocessing | Mapping[str, Any]) -> Preprocessing:
        """Build from a mapping (a Hydra node) or pass an existing instance through."""
        if isinstance(config, Preprocessing):
            return config
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Preprocessing has no field(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**{k: config[k] for k in config})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for fingerprints."""
        out = asdict(self)
        for name in ("mean", "std"):
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out

    @property
    def channels(self) -> int:
        return 1 if self.colour == "grey" else 3

    def crop_boxes(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The `(N, 4)` x0, y0, x1, y1 region each image is resampled from, in pixel units."""
        if self.crop == "full":
            full = torch.tensor([0.0, 0.0, float(width), float(height)], device=boxes.device)
            return full.expand(boxes.shape[0], 4)
        boxes = boxes.float()
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        extent = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True)
        # A degenerate box must not give a zero-area roi; one pixel keeps roi_align defined.
        half = (extent * self.box_scale).clamp_min(1.0) / 2
        return torch.cat([centre - half, centre + half], dim=1)

    def apply(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Crop, resize, convert colour, normalise and lay out a batch, on the images' device.

        Args:
            images: `(N, 3, H, W)` float RGB in [0, 1].
            boxes: `(N, 4)` face boxes x0, y0, x1, y1 in pixel units of `images`; ignored for crop="full".

        Returns:
            float32 `(N, C, size, size)` (or `(N, size, size, C)` for layout="nhwc").

        Pixels are squares [i, i+1), so a box edge at 0 is the image border (roi_align aligned=True).
        Each output pixel averages ceil(box side / size)^2 bilinear samples of its own box
        (sampling_ratio=0 is roi_align's per-box adaptive rate), which anti-aliases downscaling and
        keeps every image independent of the rest of the batch. Regions outside the image read as
        black, like zero padding.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        if boxes.ndim != 2 or boxes.shape != (images.shape[0], 4):
            raise ValueError(f"boxes must be (N, 4) with N={images.shape[0]}, got shape {tuple(boxes.shape)}")
        images = images.float()
        if self.colour != "rgb":
            # Luma is linear, so converting before resampling equals converting after, at a third of the cost.
            weights = torch.tensor(LUMA_601, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
            images = (images * weights).sum(dim=1, keepdim=True)
        height, width = images.shape[-2:]
        region = self.crop_boxes(boxes.to(images.device), height, width)
        index = torch.arange(images.shape[0], device=images.device, dtype=region.dtype).unsqueeze(1)
        out = roi_align(
            images,
            torch.cat([index, region], dim=1),
            output_size=(self.size, self.size),
            spatial_scale=1.0,
            sampling_ratio=0,
            aligned=True,
        )
        if self.colour == "grey3":
            out = out.expand(-1, 3, -1, -1)
        out = (out - self._per_channel(self.mean, out)) / self._per_channel(self.std, out)
        if self.layout == "nhwc":
            out = out.permute(0, 2, 3, 1)
        return out.contiguous()

    __call__ = apply

    @staticmethod
    def _per_channel(value: float | tuple[float, ...], like: torch.Tensor) -> torch.Tensor | float:
        if isinstance(value, tuple):
            return torch.tensor(value, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
        return value


def normalise_sigmoid(scores: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide independent sigmoid scores by their row sum so each row sums to 1.

    Only for statistics that need a distribution (label changes, entropy): the result is not a
    calibrated probability, and it couples the outputs (raising one score lowers the others), which the
    raw sigmoid scores do not. Report which form an analysis used.
    """
    return scores / scores.sum(dim=1, keepdim=True).clamp_min(eps)


def to_probabilities(outputs: torch.Tensor, output_kind: str, normalise: bool = False) -> torch.Tensor:
    """Turn a classifier's `(N, K)` outputs into scores in [0, 1].

    Args:
        outputs: what `Classifier.predict` returned.
        output_kind: "softmax" (already rows summing to 1; returned unchanged), "logits" (softmax is
            applied) or "sigmoid" (independent scores in [0, 1]; unchanged unless `normalise`).
        normalise: for "sigmoid" only, apply `normalise_sigmoid` so rows sum to 1.

    Returns:
        float32 `(N, K)`.
    """
    if output_kind not in OUTPUT_KINDS:
        raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
    outputs = outputs.float()
    if output_kind == "logits":
        return torch.softmax(outputs, dim=1)
    if output_kind == "sigmoid" and normalise:
        return normalise_sigmoid(outputs)
    return outputs


def activate(raw: torch.Tensor, activation: str) -> torch.Tensor:
    """Apply a model's final activation to its raw scores: "softmax", "sigmoid" or "logits" (none)."""
    if activation == "softmax":
        return torch.softmax(raw.float(), dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(raw.float())
    if activation == "logits":
        return raw.float()
    raise ValueError(f"activation must be one of {OUTPUT_KINDS}, got {activation!r}")
