"""Hair masks: MediaPipe selfie segmentation, above the jaw, outside the face.

Used by the age editor (greying) and the gender editor (the colour of its opt-in long hair).

The `selfie_segmentation` asset (a TFLite person segmenter, run with `ai-edge-litert`) gives the
person's silhouette. Hair is approximated as the silhouette above the mouth line, outside the face
below the brows, and not coloured like the face's own skin (ears, neck, forehead, bald scalp).

Known limit: a dark hat or headscarf is part of the silhouette and coloured like dark hair, so it is
taken for hair (Grace Hopper's cap in the demo set). Neither colour nor strand texture separates them
reliably on the demo photos, which is why the age editor leaves greying off by default. In grey
photos the skin test is weaker, and a light backdrop beside dark hair enters the mask (Tom Hanks'
portrait: the gender editor's hair comes out a lighter grey than his).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from editors.assets import SELFIE_SEGMENTATION
from editors.skin import feathered, polygon_masks
from engine.faces.mesh import landmark_group

SEGMENTER_SIZE = 256


class PersonSegmenter:
    """Person probability `(N, 1, H, W)` from the selfie segmentation model (one interpreter per thread).

    Args:
        model_path: the `.tflite` file; default: the `selfie_segmentation` asset.
        threads: TFLite interpreter threads.
    """

    def __init__(self, model_path: str | None = None, threads: int = 1) -> None:
        self.model_path = model_path
        self.threads = threads
        self._local = threading.local()

    def _interpreter(self) -> Any:
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            path = self.model_path
            if path is None:
                from engine.assets import asset_path

                path = str(asset_path(SELFIE_SEGMENTATION))
            interpreter = Interpreter(model_path=path, num_threads=self.threads)
            interpreter.allocate_tensors()
            self._local.interpreter = interpreter
        return interpreter

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Segment `(N, 3, H, W)` RGB images in [0, 1]; returns the person probability at their size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images shape={tuple(images.shape)} must be (N, 3, H, W)")
        small = F.interpolate(images.float(), size=(SEGMENTER_SIZE, SEGMENTER_SIZE), mode="area")
        batch = small.permute(0, 2, 3, 1).contiguous().cpu().numpy().astype(np.float32)
        interpreter = self._interpreter()
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]
        probs = []
        for image in batch:  # the model takes one image at a time
            interpreter.set_tensor(inp, image[None])
            interpreter.invoke()
            probs.append(interpreter.get_tensor(out)[0, ..., 0].copy())
        prob = torch.from_numpy(np.stack(probs))[:, None].to(images.device)
        return F.interpolate(prob, size=images.shape[-2:], mode="bilinear", align_corners=False).clamp(
            0.0, 1.0
        )


def hair_masks(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    person: torch.Tensor,
    face_width: torch.Tensor,
    skin_colour: torch.Tensor,
) -> torch.Tensor:
    """Soft hair masks `(N, 1, H, W)`.

    Args:
        images: `(N, 3, H, W)` linear RGB.
        landmarks: `(N, 478, 3)` in crop pixels.
        person: `(N, 1, H, W)` person probability (see `PersonSegmenter`).
        face_width: `(N,)` face widths in pixels.
        skin_colour: `(N, 3)` typical linear-RGB colour of the face's skin.
    """
    n, _, height, width = images.shape
    fw = face_width.view(n, 1, 1, 1)
    oval = landmarks[:, list(landmark_group("face_oval")), :2]
    face = feathered(polygon_masks(oval, (height, width)), 0.01 * face_width, grow=0.02 * face_width)
    rows = torch.arange(height, device=images.device, dtype=torch.float32).view(1, 1, -1, 1) + 0.5
    # Inside the oval, hair may hang over the forehead (fringes) but not below the brows.
    brow_top = landmarks[:, [105, 334], 1].mean(dim=1).view(n, 1, 1, 1) - 0.02 * fw
    face = face * torch.sigmoid((rows - brow_top) / (0.01 * fw))
    mouth_y = landmarks[:, [61, 291], 1].mean(dim=1).view(n, 1, 1, 1)
    above = torch.sigmoid((mouth_y - rows) / (0.02 * fw))
    # Skin-coloured pixels are not hair: distance in log-chromaticity and level.
    eps = 1e-3
    log_skin = torch.log(skin_colour + eps).view(n, 3, 1, 1)
    dist = (torch.log(images + eps) - log_skin).pow(2).sum(dim=1, keepdim=True).sqrt()
    not_skin = torch.sigmoid((dist - 0.35) / 0.08)
    return (person * above * (1.0 - face) * not_skin).clamp(0.0, 1.0)
