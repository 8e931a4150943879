"""Tiny models and inputs shared by the backend tests (built here, never downloaded)."""

from __future__ import annotations

import torch
from torch import nn

from classifiers.preprocess import Preprocessing
from classifiers.pyemotion import PyEmotionNet
from engine.pipeline import BatchRunner

RAW = ("Angry", "happy", "Surprised", "ahegao")
PREP = {
    "crop": "face_box",
    "size": 16,
    "colour": "grey",
    "mean": 0.5,
    "std": 0.5,
    "layout": "nchw",
    "box_scale": 1.0,
}


def faces(n: int = 5, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 crops with a face box each (different boxes, so the crop path is exercised)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    x0 = torch.randint(0, 8, (n, 1), generator=g).float()
    boxes = torch.cat([x0, x0 + 2, x0 + 20, x0 + 22], dim=1)
    return images, boxes


def tiny_net(classes: int = len(RAW)) -> nn.Module:
    torch.manual_seed(0)
    return PyEmotionNet(in_channels=1, width=4, hidden=8, num_classes=classes, input_size=16).eval()


def reference(net: nn.Module, images: torch.Tensor, boxes: torch.Tensor, prep: dict = PREP) -> torch.Tensor:
    x = Preprocessing.from_config(prep).apply(images, boxes)  # uint8, as the runner passes it
    with torch.no_grad():
        return net(x)


RUNNER = BatchRunner(device="cpu", batch_size=2, progress="off")  # batch 2 of 5: the last batch is partial


