"""A seeded placebo classifier: a fixed random projection of a tiny grey face crop.

It has no knowledge of emotion, so any "effect" it shows is what chance, the edit's pixel changes and
the statistics produce on their own: the classifier counterpart of an identity editor. Its output still
depends on the pixels, so a real edit can move it, and a sham should barely move it.
"""

from __future__ import annotations

import torch

from engine.types import CANONICAL_EMOTIONS, Classifier

from .preprocess import Preprocessing


class DummyClassifier(Classifier):
    """Softmax of `temperature * W x / sqrt(D)`, with `W` drawn once from `seed`.

    Args:
        seed: seeds the projection `W` (D x 7, standard normal); the same seed gives the same classifier.
        size: side of the grey face crop `x` (D = size * size pixels, mapped to [-1, 1]).
        box_scale: face crop side relative to the longer side of the face box.
        temperature: scales the logits; larger gives more confident placebo predictions.
    """

    name = "dummy"
    labels = CANONICAL_EMOTIONS[:7]
    output_kind = "softmax"
    batch_size = 1024

    def __init__(
        self, seed: int = 0, size: int = 16, box_scale: float = 1.2, temperature: float = 1.0
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"DummyClassifier.seed must be an int, got {seed!r}")
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"DummyClassifier.temperature must be a positive number, got {temperature!r}")
        self.seed = seed
        self.size = size
        self.box_scale = float(box_scale)
        self.temperature = float(temperature)
        self._preprocessing = Preprocessing(
            crop="face_box", size=size, colour="grey", mean=0.5, std=0.5, box_scale=box_scale
        )
        # Drawn on CPU so the projection is identical on every device.
        generator = torch.Generator().manual_seed(seed)
        dims = size * size
        self._weight = torch.randn(dims, len(self.labels), generator=generator) * (
            self.temperature / dims**0.5
        )

    def to(self, device: torch.device | str) -> DummyClassifier:
        self._weight = self._weight.to(device)
        return self

    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self._preprocessing.apply(images, boxes).flatten(1)

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Placebo probabilities `(N, 7)` for flattened crops `(N, size * size)`."""
        # In float64: a float32 product of one face sums in an order that follows the BLAS's thread
        # split, and a placebo's outputs must not change with the stage's threads (overlap test).
        with torch.inference_mode():
            logits = inputs.to(self._weight.device).double() @ self._weight.double()
            return torch.softmax(logits, dim=1).float()

    def fingerprint(self) -> dict:
        # version 2: logits in float64 (cached predictions of version 1 differ in the last bit)
        return {**super().fingerprint(), "version": 2}
