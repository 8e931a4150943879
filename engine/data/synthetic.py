"""Synthetic faces drawn on the canonical mesh, as a dataset (no photo, no detector needed)."""

from __future__ import annotations

import numpy as np

from engine.data.records import Dataset, ImageRecord


class SyntheticFaceDataset(Dataset):
    """Synthetic faces drawn on the canonical mesh (`engine.faces.template`): no download, no detector.

    With `faces=template` (the analyser that takes each image as an aligned frontal face), an
    experiment runs end to end without MediaPipe: for tests, dry runs and trying a new plugin. They are
    drawings, not photographs: no finding about real faces comes from them.
    """

    name = "synthetic"

    def __init__(self, n: int = 8, size: int = 384, seed: int = 0, jitter: float = 0.04,
                 limit: int | None = None) -> None:
        super().__init__(limit)
        if n < 1:
            raise ValueError(f"dataset.n must be >= 1, got {n}")
        if not 64 <= size <= 2048:
            raise ValueError(f"dataset.size must be in [64, 2048] px, got {size}")
        self.n, self.size, self.seed, self.jitter = n, size, seed, jitter

    def _build(self) -> list[ImageRecord]:
        return [ImageRecord(f"synthetic_{i:03d}", f"engine.faces.template (seed {self.seed}, face {i})",
                            lambda i=i: self._faces()[i], metadata={"origin": "synthetic"})
                for i in range(self.n)]

    def _faces(self) -> np.ndarray:
        if not hasattr(self, "_drawn"):
            from engine.faces import CropSpec
            from engine.faces.template import synthetic_faces

            self._drawn = synthetic_faces(self.n, CropSpec(size=self.size), self.seed, self.jitter)[0]
        return self._drawn


