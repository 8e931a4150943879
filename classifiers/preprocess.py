"""Shared, batched, on-device classifier preprocessing and output activations.

Every backend declares its input in config as a `Preprocessing` (crop, size, colour, normalisation,
layout), so a swap of backends never hides a preprocessing difference in code. `Preprocessing.apply`
turns engine crops `(N, 3, H, W)` (uint8, or float in [0, 1]) plus face boxes into model inputs on the
images' device: a whole-pixel crop square resized with PIL's antialiased bilinear filter, grey
conversion, normalisation and layout (see `Preprocessing.apply`).

Outputs are turned into probabilities with `to_probabilities`; `normalise_sigmoid` is the
documented, opt-in way to make independent sigmoid scores sum to 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

CROPS = ("face_box", "full")
COLOURS = ("grey", "rgb", "grey3")
LAYOUTS = ("nchw", "nhwc")
OUTPUT_KINDS = ("softmax", "sigmoid", "logits")

#: Names the resize `Preprocessing.apply` does; part of every classifier's cache fingerprint.
RESAMPLER = "pil-bilinear-antialias/whole-pixel-box"

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

    #: Not config: "per_image" or "matmul" forces one resize route of `apply` (tests compare them).
    resize_route: ClassVar[str | None] = None

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
        out["resampler"] = RESAMPLER  # a changed resize must invalidate cached predictions
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
        # A degenerate box must not give an empty crop; one pixel keeps the resize defined.
        half = (extent * self.box_scale).clamp_min(1.0) / 2
        return torch.cat([centre - half, centre + half], dim=1)

    def pixel_regions(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """`crop_boxes` rounded to whole pixels: `(N, 4)` int64 x0, y0, x1, y1, at least 1 px wide."""
        region = self.crop_boxes(boxes, height, width).round().long()
        return torch.cat([region[:, :2], torch.maximum(region[:, 2:], region[:, :2] + 1)], dim=1)

    def apply(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Crop, resize, convert colour, normalise and lay out a batch, on the images' device.

        Args:
            images: `(N, 3, H, W)` RGB, uint8 in 0..255 (what the pipeline caches and feeds) or
                float in [0, 1].
            boxes: `(N, 4)` face boxes x0, y0, x1, y1 in pixel units of `images`; ignored for crop="full".

        Returns:
            float32 `(N, C, size, size)` (or `(N, size, size, C)` for layout="nhwc").

        The crop square is rounded to whole pixels and resized with the antialiased bilinear
        (triangle) filter of PIL's `Image.resize(..., BILINEAR)`, which torch's
        `interpolate(antialias=True)` reproduces. That is the resize most FER training code used, so
        the engine feeds a model what a researcher's PIL loop would. Parts of the square outside the
        image read as black. Every image is resized on its own, so a result never depends on the
        rest of the batch. Two routes give the same filter:

        * uint8 on the CPU: one `interpolate` call per image on its uint8 crop, torch's vectorised
          fixed-point kernel. Only the crop is read, and no float copy of the whole image is made,
          which on a CPU costs more than the model's forward pass.
        * otherwise (CUDA, or float input): the filter as two per-image weight matrices applied with
          batched matmuls, one launch for the whole batch.

        Both round a uint8 input's resized pixels to grey levels, as PIL does; they can still differ
        by one level where torch's fixed-point weights round the other way (rare). Float input is
        resized in float. `resize_route` forces a route, for tests.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        if boxes.ndim != 2 or boxes.shape != (images.shape[0], 4):
            raise ValueError(f"boxes must be (N, 4) with N={images.shape[0]}, got shape {tuple(boxes.shape)}")
        height, width = images.shape[-2:]
        region = self.pixel_regions(boxes.to(images.device), height, width)
        route = self.resize_route or ("per_image" if images.dtype == torch.uint8 and images.device.type == "cpu"
                                      else "matmul")
        if route == "per_image":
            out = _resize_per_image(images, region, self.size)
            out = out.float().div_(255.0) if out.dtype == torch.uint8 else out.float()
            out = self._colour(out)
        elif images.dtype == torch.uint8:
            # An 8-bit resized crop, as PIL and the uint8 route make: rounding each channel to a grey
            # level before the luma matters (sensitive models flip labels on sub-level differences).
            out = _resize_matmul(images.float(), region, self.size, levels=True).div_(255.0)
            out = self._colour(out)
        else:
            # Luma is linear, so converting before resampling equals converting after, at a third of the cost.
            out = _resize_matmul(self._colour(images.float()), region, self.size)
        if self.colour == "grey3":
            out = out.expand(-1, 3, -1, -1)
        out = (out - self._per_channel(self.mean, out)) / self._per_channel(self.std, out)
        if self.layout == "nhwc":
            out = out.permute(0, 2, 3, 1)
        return out.contiguous()

    __call__ = apply

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        """RGB `(N, 3, h, w)` float -> one luma channel for grey and grey3, unchanged for rgb."""
        if self.colour == "rgb":
            return x
        # Element-wise, not a reduction kernel: the result must not depend on the batch it is in.
        r, g, b = LUMA_601
        return (x[:, 0:1] * r).add_(x[:, 1:2], alpha=g).add_(x[:, 2:3], alpha=b)

    @staticmethod
    def _per_channel(value: float | tuple[float, ...], like: torch.Tensor) -> torch.Tensor | float:
        if isinstance(value, tuple):
            return torch.tensor(value, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
        return value


def _resize_per_image(images: torch.Tensor, region: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's `region` (whole pixels, may reach outside: zero padding) resized to `size` x `size`.

    Keeps the input dtype: on uint8 this is torch's vectorised antialiased kernel, which matches PIL.
    """
    n, c, height, width = images.shape
    out = torch.zeros((n, c, size, size), dtype=images.dtype, device=images.device)
    for i, (x0, y0, x1, y1) in enumerate(region.tolist()):
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            continue  # the square lies wholly outside the image: all black
        crop = images[i : i + 1, :, cy0:cy1, cx0:cx1]
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            crop = F.pad(crop, (cx0 - x0, x1 - cx1, cy0 - y0, y1 - cy1))
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return out


def filter_matrix(start: torch.Tensor, length: torch.Tensor, size: int, lo: int, hi: int) -> torch.Tensor:
    """Weights `(N, size, hi - lo)` of the antialiased bilinear resize along one axis.

    Output pixel `i` of image `n` is `sum_p W[n, i, p] * x[p + lo]` for the crop that starts at image
    pixel `start[n]` and is `length[n]` pixels long. The weights are PIL's: a triangle whose half-width
    is one input pixel, widened to the scale factor when shrinking, centred on the output pixel's
    centre, normalised over the taps inside the crop. Taps inside the crop but outside the image are
    black pixels: they count in the normalisation and add nothing.
    """
    dev = start.device
    scale = (length.float() / size).view(-1, 1, 1)
    support = scale.clamp_min(1.0)
    centre = (torch.arange(size, device=dev, dtype=torch.float32).view(1, -1, 1) + 0.5) * scale

    def triangle(tap: torch.Tensor) -> torch.Tensor:
        inside = (tap >= 0) & (tap < length.view(-1, 1, 1))
        return (1 - (tap + 0.5 - centre).abs() / support).clamp_min(0) * inside

    # Normalise over the taps a support window can reach (crop coordinates), computed separately so
    # the image-sized matrix below never needs the crop's off-image part.
    first = (centre - support + 0.5).floor()
    reach = int(torch.ceil(2 * support.max()).item()) + 2
    taps = first + torch.arange(reach, device=dev, dtype=torch.float32).view(1, 1, -1)
    total = triangle(taps).sum(dim=2, keepdim=True).clamp_min(1e-12)
    pixels = torch.arange(lo, hi, device=dev, dtype=torch.float32).view(1, 1, -1) - start.view(-1, 1, 1).float()
    return triangle(pixels) / total


def _resize_matmul(images: torch.Tensor, region: torch.Tensor, size: int, levels: bool = False) -> torch.Tensor:
    """`_resize_per_image` for a whole float batch at once: `W_y @ (image @ W_x^T)` per image and channel.

    With `levels`, `images` hold 0..255 values and each pass rounds to whole levels, as PIL's (and
    torch's uint8) resize does: horizontal pass, round, vertical pass, round.
    """
    height, width = images.shape[-2:]
    x0, y0, x1, y1 = region.unbind(dim=1)
    # Only the rows and columns some crop covers are read.
    ylo, yhi = max(int(y0.min()), 0), min(int(y1.max()), height)
    xlo, xhi = max(int(x0.min()), 0), min(int(x1.max()), width)
    if yhi <= ylo or xhi <= xlo:
        return images.new_zeros((images.shape[0], images.shape[1], size, size))
    wy = filter_matrix(y0, y1 - y0, size, ylo, yhi).to(images.dtype)
    wx = filter_matrix(x0, x1 - x0, size, xlo, xhi).to(images.dtype)
    rows = images[:, :, ylo:yhi, xlo:xhi] @ wx.transpose(1, 2).unsqueeze(1)
    if levels:
        rows = rows.round_()
    out = wy.unsqueeze(1) @ rows
    return out.round_().clamp_(0, 255) if levels else out


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
