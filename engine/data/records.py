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
    if img.mode.startswith("I;16"):  # integer arithmetic: a large 16-bit image never becomes float64
        arr = np.asarray(img).astype(np.uint32)
        grey = ((arr * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max()) if arr.size else 0.0
        hi = 1.0 if img.mode == "F" and top <= 1.0 else (65535.0 if top > 255 else 255.0)
        grey = np.clip(arr * np.float32(255.0 / hi) + np.float32(0.5), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


#: The most pixels an image may have when decoded (default 40 MP; FACECF_MAX_PIXELS overrides it).
#: PIL's own bomb limit (about 179 MP) lets a 328 KB 16-bit PNG of 13,000 x 13,000 take 5.5 GB.
DEFAULT_MAX_PIXELS = 40_000_000


def max_pixels() -> int:
    value = os.environ.get("FACECF_MAX_PIXELS", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else DEFAULT_MAX_PIXELS


def _within_pixel_cap(img: Image.Image) -> None:
    """Check the size from the header, before decoding: a JPEG is decoded reduced (by 2, 4 or 8, as
    its codec can) to fit; any other format above the cap is refused with the reason."""
    cap = max_pixels()
    w, h = img.size
    if w * h <= cap:
        return
    if img.format == "JPEG":
        scale = 2
        while scale < 8 and (w // scale) * (h // scale) > cap:
            scale *= 2
        img.draft("RGB", (w // scale, h // scale))
        if img.size[0] * img.size[1] <= cap:
            return
    raise ImageLoadError(f"image too large: {w}x{h} px ({w * h / 1e6:.0f} MP) is over the "
                         f"{cap / 1e6:.0f} MP cap (FACECF_MAX_PIXELS)")


def load_image_file(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8, raising `ImageLoadError` with a readable reason."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"file not found: {p}")
    if p.stat().st_size == 0:
        raise ImageLoadError("empty file")
    try:
        with Image.open(p) as img:
            _within_pixel_cap(img)
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
            _within_pixel_cap(img)
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


