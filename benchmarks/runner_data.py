"""Demo faces for the runner benchmarks: the pipeline's aligned crops, or the demo set's own photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def demo_crops(crops: Path | None, save: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned demo-set crops `(N, 3, H, W)` uint8 and face boxes `(N, 4)`, from the analyzer or an .npz."""
    if crops is not None:
        z = np.load(crops)
        return torch.from_numpy(z["images"]), torch.from_numpy(z["boxes"])
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer

    analyzer = FaceAnalyzer()
    images, boxes = [], []
    for rec in DemoDataset():
        fa, crop = analyzer.analyse(rec.image_id, rec.load())
        if fa.ok:
            images.append(crop)
            boxes.append(fa.box)
    analyzer.close()
    out = (
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(boxes)),
    )
    if save is not None:
        np.savez_compressed(save, images=out[0].numpy(), boxes=out[1].numpy())
        print(f"saved {len(images)} crops to {save}")
    return out


def demo_photos() -> tuple[list[np.ndarray], np.ndarray]:
    """The demo set's photos at their own resolution (HWC uint8) and each face's box in photo pixels."""
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer, landmark_box

    analyzer = FaceAnalyzer()
    photos, boxes = [], []
    for rec in DemoDataset():
        rgb = rec.load()
        fa, _ = analyzer.analyse(rec.image_id, rgb)
        if fa.ok:
            # Crop landmarks back to photo pixels through the inverse of the alignment.
            m = np.vstack([fa.crop_from_source.astype(np.float64), [0.0, 0.0, 1.0]])
            xy1 = np.c_[fa.landmarks[:, :2], np.ones(len(fa.landmarks))] @ np.linalg.inv(m).T
            photos.append(rgb)
            boxes.append(landmark_box(xy1[:, :2].astype(np.float32)))
    analyzer.close()
    return photos, np.stack(boxes)


def unique_copies(images: list[np.ndarray], boxes: np.ndarray, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """`n` HWC images cycling through `images`; copy k of an image has pixel (0, 0) set to k."""
    idx = np.arange(n) % len(images)
    out = []
    for k, i in enumerate(idx):
        img = images[i].copy()
        img[0, 0, 0] = k // len(images)
        out.append(img)
    return out, boxes[idx]
