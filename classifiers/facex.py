"""facex's MobileNetV2 expression model (PyPI `facex==1.1.0`, MIT), run as a TFLite classifier.

The asset `facex_mobilenetv2` is the package's `model_optimized.tflite`: float32 NHWC input
1x200x200x3, fp16 weights, a Softmax at the end of the graph. The package converts the face to grey
(OpenCV BGR2GRAY on its BGR frames, i.e. BT.601 luma), resizes the crop to 200x200 with
`skimage.transform.resize` into three identical channels in [0, 1], and feeds its Haar-cascade box.
`Preprocessing(colour="grey3", size=200, mean=0, std=1, layout="nhwc")` reproduces that; the
interpreter accepts a resized batch dimension, so a batch runs in one call.
"""

from __future__ import annotations

from typing import Any

from .tflite_model import TFLiteClassifier

ASSET = "facex_mobilenetv2"
#: Output order of the package (its default `category` list).
FACEX_LABELS = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")
INPUT_SIZE = 200


class FacexMobileNetV2(TFLiteClassifier):
    """facex's TFLite MobileNetV2: 7 emotions from a 200x200 grey face copied to 3 channels, softmax.

    Args:
        box_scale: side of the square face crop relative to the longer side of the face box. The
            package crops OpenCV Haar-cascade boxes, which span about the landmark box, hence 1.0.
        num_threads: interpreter threads; default: torch's intra-op thread count.
        batch_size: largest batch the runner should try first.
    """

    def __init__(self, box_scale: float = 1.0, num_threads: int | None = None, batch_size: int = 64) -> None:
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

    def _weights_identity(self) -> Any:
        from engine.assets import get_asset

        return {"asset": ASSET, "sha256": get_asset(ASSET).sha256}
