"""The placebo editor: changes nothing, through the same tensor path as a real edit."""

from __future__ import annotations

from typing import ClassVar

import torch

from engine.types import Editor, EditResult, FaceBatch


class PlaceboEditor(Editor):
    """Returns every face unchanged with an all-zero edit mask (a placebo control, like a dummy model).

    Any classifier shift measured against this editor is noise in the rest of the pipeline.
    """

    property: ClassVar[str] = "none"
    sham_is_input = True  # every change scales with strength (tests/test_editor_contract.py)

    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        """Copy the images; `strength` must still be in [0, 1] and `seed` is unused."""
        value = float(strength)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"PlaceboEditor strength={strength!r} must be in [0, 1]")
        images = batch.images.clone()  # a copy, so callers never alias the batch
        height, width = batch.size
        mask = torch.zeros(len(batch), 1, height, width, dtype=torch.float32, device=batch.images.device)
        metadata = [{"editor": self.name, "strength": value} for _ in range(len(batch))]
        landmarks = batch.landmarks.clone() if batch.landmarks is not None else None
        return EditResult(images=images, mask=mask, metadata=metadata, landmarks=landmarks)
