"""A synthetic classifier with a known response: "happiness" rises with left-right face symmetry.

It is the positive control of the engine: a symmetry edit must move it, in a known direction, and the
statistics must find that. Exactly what it computes, per image:

1. `g` = the grey (BT.601 luma) square crop around the face box centre, side = max(w, h) * `box_scale`,
   resampled to `size` x `size` on [0, 1] (the shared `Preprocessing`, anti-aliased).
2. `asymmetry = mean |g - hflip(g)|`: the mean absolute difference between the crop and its mirror
   image about the crop's vertical centre line (0 for a mirror-symmetric crop, at most 1).
3. `happiness = sigmoid((centre - asymmetry) / width)`: smooth and strictly decreasing in asymmetry.
4. The other six labels share `1 - happiness` equally, so each row sums to 1.

It responds to anything that changes the crop's mirror difference: face shape, texture, lighting, hair,
background and where the box sits. It ignores everything else, including expression.
"""

from __future__ import annotations

import torch

from engine.types import CANONICAL_EMOTIONS, Classifier

from .preprocess import Preprocessing


class AsymmetryProbe(Classifier):
    """Known-response control classifier; see the module docstring for the exact formula.

    Args:
        centre: asymmetry at which happiness is 0.5. The default puts aligned photos of real faces
            (asymmetry ~0.1-0.2) on the steep part of the curve.
        width: asymmetry change that moves the logit by 1.
        size: side of the grey crop the asymmetry is measured on.
        box_scale: crop side relative to the longer side of the face box (1.0 = just the face).
    """

    name = "asymmetry_probe"
    labels = CANONICAL_EMOTIONS[:7]
    output_kind = "softmax"
    batch_size = 1024

    def __init__(
        self, centre: float = 0.15, width: float = 0.05, size: int = 32, box_scale: float = 1.0
    ) -> None:
        if not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"AsymmetryProbe.width must be a positive number, got {width!r}")
        self.centre = float(centre)
        self.width = float(width)
        self.size = size
        self.box_scale = float(box_scale)
        self._preprocessing = Preprocessing(crop="face_box", size=size, colour="grey", box_scale=box_scale)
        self._happiness = self.labels.index("happiness")

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self._preprocessing.apply(images, boxes)

    @staticmethod
    def asymmetry(crops: torch.Tensor) -> torch.Tensor:
        """`(N,)` mean |crop - horizontal mirror| of preprocessed `(N, 1, size, size)` crops."""
        return (crops - crops.flip(-1)).abs().mean(dim=(1, 2, 3))

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """`(N, 7)` rows: happiness from the formula above, the rest shared equally."""
        with torch.inference_mode():
            happiness = torch.sigmoid((self.centre - self.asymmetry(inputs.float())) / self.width)
            others = (1 - happiness) / (len(self.labels) - 1)
            probs = others.unsqueeze(1).expand(-1, len(self.labels)).clone()
            probs[:, self._happiness] = happiness
            return probs
