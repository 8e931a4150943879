"""facex's MobileNetV2 expression model (PyPI `facex==1.1.0`, MIT), run as a TFLite classifier.

The asset `facex_mobilenetv2` is the package's `model_optimized.tflite`: float32 NHWC input
1x200x200x3, fp16 weights, a Softmax at the end of the graph. The package converts the face to grey
(OpenCV BGR2GRAY on its BGR frames, i.e. BT.601 luma), resizes the crop to 200x200 with
`skimage.transform.resize` into three identical channels in [0, 1], and feeds its Haar-cascade box.
`Preprocessing(colour="grey3", size=200, mean=0, std=1, layout="nhwc")` reproduces that; the
interpreter accepts a resized batch dimension, so a batch runs in one call.

The crop imitates the package's Haar-cascade box. On the 93 aligned demo faces, OpenCV's
`haarcascade_frontalface_default` boxes had a side of 1.00x the landmark box's longer side (median;
IQR 0.96-1.06) and a centre 0.08 of that side higher (the cascade frames brows to chin, the landmark
box forehead to chin). Hence `box_scale=1.0` and `box_shift=-0.08`; with them facex's outputs moved
closer to those on the Haar boxes themselves (mean total-variation distance 0.24, against 0.33 unshifted).
"""

from __future__ import annotations

from typing import Any

import torch

from classifiers.assets import FACEX_MOBILENETV2

from .tflite_model import TFLiteClassifier

ASSET = FACEX_MOBILENETV2
#: Output order of the package (its default `category` list).
FACEX_LABELS = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")
INPUT_SIZE = 200


class FacexMobileNetV2(TFLiteClassifier):
    """facex's TFLite MobileNetV2: 7 emotions from a 200x200 grey face copied to 3 channels, softmax.

    Args:
        box_scale: side of the square face crop relative to the longer side of the face box. The
            package crops OpenCV Haar-cascade boxes, which span about the landmark box, hence 1.0.
        box_shift: vertical shift of the crop centre, as a fraction of the face box's longer side
            (negative: up); -0.08 matches the Haar boxes (see the module docstring).
        num_threads: interpreter threads; default: torch's intra-op thread count.
        batch_size: largest batch the runner should try first.
    """

    def __init__(
        self,
        box_scale: float = 1.0,
        box_shift: float = -0.08,
        num_threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        if isinstance(box_shift, bool) or not isinstance(box_shift, (int, float)) or abs(box_shift) > 0.5:
            raise ValueError(f"FacexMobileNetV2.box_shift must be a number in [-0.5, 0.5], got {box_shift!r}")
        super().__init__(
            path=f"asset:{ASSET}",
            labels=FACEX_LABELS,
            preprocessing={
                "crop": "face_box",
                "size": INPUT_SIZE,
                "colour": "grey3",
                "mean": 0.0,
                "std": 1.0,
                "layout": "nhwc",
                "box_scale": box_scale,
            },
            activation="softmax",
            applied_in_model=True,
            num_threads=num_threads,
            name="facex_mobilenetv2",
            batch_size=batch_size,
        )
        self.box_scale = float(box_scale)
        self.box_shift = float(box_shift)

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        boxes = boxes.float()
        side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True)
        shift = torch.cat([torch.zeros_like(side), side * self.box_shift] * 2, dim=1)
        return super().preprocess(images, boxes + shift)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "box_shift": self.box_shift}

    def _weights_identity(self) -> Any:
        from engine.assets import get_asset

        return {"asset": ASSET, "sha256": get_asset(ASSET).sha256}
