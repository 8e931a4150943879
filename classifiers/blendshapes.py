"""MediaPipe's 52 face blendshape scores, exposed as a classifier: a fourth expression signal.

The Face Landmarker (asset `face_landmarker`, the engine's own `engine.faces.FaceLandmarker`) is run
again on every crop it is given: originals, shams and edits alike. Its blendshape head scores
facial actions (`mouthSmileLeft`, `browDownRight`, `jawOpen`, ...) from the fitted mesh, so it is not
a CNN trained on emotion labels, and it fails in different ways from the three emotion models.

**Its outputs are not a distribution and its labels are not emotions.** Each of the 52 scores lies
in [0, 1] on its own (they do not sum to 1), and the labels are MediaPipe's own blendshape names
(`_neutral`, `browDownLeft`, ..., `mouthSmileLeft`; `_neutral` is not the emotion "neutral").
`output_kind` is "scores". A crop in which the landmarker finds no face gives a row of NaN, which
the paired statistics drop, rather than invented zeros.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from engine.types import Classifier

log = logging.getLogger(__name__)


def category_names() -> tuple[str, ...]:
    """MediaPipe's own category names in model order ("_neutral", "browDownLeft", ..., "noseSneerRight").

    `engine.faces.blendshape_names` gives the enum names ("MOUTH_SMILE_LEFT"); the results carry these
    ARKit-style names, which are what the model card documents. Lower-casing the enum names instead
    would turn "NEUTRAL" into "neutral", the emotion label, which this output is not.
    """
    from engine.faces import blendshape_names

    out = []
    for enum_name in blendshape_names():
        if enum_name == "NEUTRAL":
            out.append("_neutral")
            continue
        first, *rest = enum_name.lower().split("_")
        out.append(first + "".join(part.title() for part in rest))
    return tuple(out)


class MediaPipeBlendshapes(Classifier):
    """The 52 MediaPipe blendshape scores of each face crop (see the module docstring).

    Args:
        min_detection_confidence: the landmarker's detection and presence threshold.
        workers: threads running the landmarker (one landmarker per thread; MediaPipe's C++ releases the GIL).
        batch_size: largest batch the runner should hand over at once.
    """

    name = "mediapipe_blendshapes"
    output_kind = "scores"

    def __init__(self, min_detection_confidence: float = 0.5, workers: int = 2, batch_size: int = 64) -> None:
        if not 0.0 < min_detection_confidence < 1.0:
            raise ValueError(
                f"MediaPipeBlendshapes.min_detection_confidence must be in (0, 1), got {min_detection_confidence}"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"MediaPipeBlendshapes.workers must be a positive int, got {workers!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"MediaPipeBlendshapes.batch_size must be a positive int, got {batch_size!r}")
        self.min_detection_confidence = float(min_detection_confidence)
        self.workers = workers
        self.batch_size = batch_size
        self._landmarker: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._labels: tuple[str, ...] | None = None

    @property
    def labels(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._labels is None:
            self._labels = category_names()
        return self._labels

    @property
    def landmarker(self) -> Any:
        if self._landmarker is None:
            from engine.faces import FaceLandmarker

            self._landmarker = FaceLandmarker(
                min_detection_confidence=self.min_detection_confidence, num_faces=1
            )
        return self._landmarker

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        """Whole crops as `(N, H, W, 3)` uint8 RGB on the host (MediaPipe finds the face itself)."""
        self.landmarker  # noqa: B018 - resolve the asset early
        pixels = (
            images
            if images.dtype == torch.uint8
            else images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        )
        return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def _scores(self, rgb: np.ndarray) -> np.ndarray:
        found = self.landmarker.detect(rgb)
        if found is None:
            return np.full(len(self.labels), np.nan, dtype=np.float32)
        return found["blendshapes"].astype(np.float32)

    def predict(self, inputs: np.ndarray) -> torch.Tensor:
        """`(N, 52)` blendshape scores in [0, 1] (NaN rows where no face is found)."""
        if len(inputs) == 0:
            return torch.zeros(0, len(self.labels))
        if self.workers == 1 or len(inputs) == 1:
            rows = [self._scores(x) for x in inputs]
        else:
            if self._pool is None:
                # Kept for the classifier's life: each thread keeps its own landmarker between batches.
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="blendshapes")
            rows = list(self._pool.map(self._scores, inputs))
        missed = sum(bool(np.isnan(r[0])) for r in rows)
        if missed:
            log.info("classifier=%s no face found in %d of %d crops (NaN rows)", self.name, missed, len(rows))
        return torch.from_numpy(np.stack(rows))

    def fingerprint(self) -> dict[str, Any]:
        from engine.assets import get_asset

        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "min_detection_confidence": self.min_detection_confidence,
            "model": get_asset("face_landmarker").sha256,
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._landmarker is not None:
            self._landmarker.close()
