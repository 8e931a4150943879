"""Image records and datasets: the base types, and decoding any image file to RGB uint8.

A dataset is a list of `ImageRecord`s. Records load lazily; `load()` returns an RGB uint8 array or
raises `ImageLoadError` with a reason that ends up in `skipped.csv`. Bad files never stop a run.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# A truncated JPEG must be reported, never half-decoded into a grey-bottomed "face".
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageLoadError(RuntimeError):
    """The file cannot be used as an image; the message is the reason recorded in skipped.csv."""


@dataclass
class ImageRecord:
    """One image of a dataset. `load()` returns RGB uint8 (H, W, 3)."""

    image_id: str
    source: str
    loader: Callable[[], np.ndarray] = field(repr=False)
    label: str | None = None
    subject: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The file the pixels are decoded from, when there is one: a re-run keys its cached work by the
    #: file's bytes and need not decode it again (see `engine.pipeline`).
    file: str | None = None

    def load(self) -> np.ndarray:
        return self.loader()


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL image (grey, palette, RGBA, 16-bit, float, CMYK) to RGB uint8.

    EXIF orientation is applied first so that a phone photo is upright, as a viewer shows it.
    Transparent pixels are composited over white rather than dropped to black.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            hi = 1.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def load_image_file(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8, raising `ImageLoadError` with a readable reason."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"file not found: {p}")
    if p.stat().st_size == 0:
        raise ImageLoadError("empty file")
    try:
        with Image.open(p) as img:
            img.load()  # forces the full decode, so truncation is caught here
            arr = to_rgb_uint8(img)
    except UnidentifiedImageError:
        raise ImageLoadError("not a recognised image format (corrupt or not an image)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"unreadable image: {exc}") from None
    if arr.ndim != 3 or arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageLoadError(f"image too small: {arr.shape[1]}x{arr.shape[0]} px")
    return np.ascontiguousarray(arr)


def load_image_bytes(data: bytes) -> np.ndarray:
    """Like `load_image_file` for bytes in memory."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.ascontiguousarray(to_rgb_uint8(img))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"unreadable image: {exc}") from None


class Dataset(Sequence[ImageRecord]):
    """Base class: a sized, indexable list of records with an optional `limit`."""

    name = "dataset"

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"dataset.limit must be >= 1 or null, got {limit}")
        self.limit = limit
        self._records: list[ImageRecord] | None = None

    def _build(self) -> list[ImageRecord]:
        raise NotImplementedError

    @property
    def records(self) -> list[ImageRecord]:
        if self._records is None:
            recs = self._build()
            ids = [r.image_id for r in recs]
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                raise ValueError(f"dataset '{self.name}' has duplicate image id '{dup}'")
            self._records = recs[: self.limit] if self.limit else recs
        return self._records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):  # type: ignore[override]
        return self.records[i]

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "n": len(self)}


