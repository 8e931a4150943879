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

`fidelity: package` (the default) builds the input with facex's own steps on that square
(`classifiers.package_inputs.facex_inputs`: 8-bit grey of the frame, a whole-pixel cut, skimage's
resize); `engine` uses the engine's batched route (PIL-style bilinear resize, then float grey).
"""

from __future__ import annotations

from typing import Any

import torch

from classifiers.assets import FACEX_MOBILENETV2

from .package_inputs import HAAR_BOX_SHIFT, check_box_shift, check_fidelity, facex_inputs, haar_like_boxes
from .tflite_model import TFLiteClassifier

ASSET = FACEX_MOBILENETV2
#: Output order of the package (its default `category` list).
FACEX_LABELS = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")
INPUT_SIZE = 200


class FacexMobileNetV2(TFLiteClassifier):
    """facex's TFLite MobileNetV2: 7 emotions from a 200x200 grey face copied to 3 channels, softmax.

    Args:
        fidelity: "package" (facex's grey, whole-pixel cut and skimage resize) or "engine".
        box_scale: side of the square face crop relative to the longer side of the face box. The
            package crops OpenCV Haar-cascade boxes, which span about the landmark box, hence 1.0.
        box_shift: vertical shift of the crop centre, as a fraction of the face box's longer side
            (negative: up); -0.08 matches the Haar boxes (see the module docstring).
        num_threads: interpreter threads; default: torch's intra-op thread count.
        batch_size: largest batch the runner should try first.
    """

    def __init__(
        self,
        fidelity: str = "package",
        box_scale: float = 1.0,
        box_shift: float = HAAR_BOX_SHIFT,
        num_threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
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
        self.fidelity = check_fidelity("FacexMobileNetV2", fidelity)
        self.box_scale = float(box_scale)
        self.box_shift = check_box_shift("FacexMobileNetV2", box_shift)

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if self.fidelity == "package":
            self.model  # noqa: B018 - load before timing-sensitive work, and fail early
            return facex_inputs(images, haar_like_boxes(boxes, self.box_scale, self.box_shift), INPUT_SIZE)
        # engine: the same square, cut by the engine's route (which scales the box by box_scale itself)
        return super().preprocess(images, haar_like_boxes(boxes, 1.0, self.box_shift))

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "box_shift": self.box_shift, "fidelity": self.fidelity}

    def _weights_identity(self) -> Any:
        from engine.assets import get_asset

        return {"asset": ASSET, "sha256": get_asset(ASSET).sha256}
