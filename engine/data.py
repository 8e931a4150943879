"""Datasets: the built-in demo set, image folders, CSV/Parquet manifests and FER2013-style CSVs.

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


class DemoDataset(Dataset):
    """Built-in demo faces, made from files that ship inside installed packages (nothing vendored).

    * the 100 real LFW faces of `skimage.data.lfw_subset()` (25x25 grey), upscaled to `lfw_size`
      so the landmarker can find them;
    * Eileen Collins (`skimage.data.astronaut()`, public domain, NASA);
    * Grace Hopper (matplotlib's `grace_hopper.jpg`, public domain, US Navy).

    The two portraits come first, so that a small `limit` still contains sharp photos.
    There are no expression labels: the demo is for counterfactual contrasts, which need none.
    """

    name = "demo"

    def __init__(
        self, limit: int | None = None, n_lfw: int = 100, lfw_size: int = 128, portraits: bool = True
    ) -> None:
        super().__init__(limit)
        if not 0 <= n_lfw <= 100:
            raise ValueError(f"dataset.n_lfw must be in [0, 100] (the LFW faces of lfw_subset), got {n_lfw}")
        if lfw_size < 25:
            raise ValueError(f"dataset.lfw_size must be >= 25 px, got {lfw_size}")
        self.n_lfw = n_lfw
        self.lfw_size = lfw_size
        self.portraits = portraits

    def _build(self) -> list[ImageRecord]:
        recs: list[ImageRecord] = []
        if self.portraits:
            recs.append(ImageRecord("astronaut", "skimage.data.astronaut()", _load_astronaut,
                                    metadata={"origin": "portrait"}))
            recs.append(ImageRecord("grace_hopper", "matplotlib sample_data/grace_hopper.jpg",
                                    _load_grace_hopper, metadata={"origin": "portrait"}))
        size = self.lfw_size
        for i in range(self.n_lfw):
            recs.append(
                ImageRecord(
                    f"lfw_{i:03d}",
                    f"skimage.data.lfw_subset()[{i}]",
                    lambda i=i: _load_lfw(i, size),
                    metadata={"origin": "lfw"},
                )
            )
        return recs


def _load_astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


def _load_grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return load_image_bytes(f.read())


_LFW_CACHE: dict[str, np.ndarray] = {}


def _load_lfw(i: int, size: int) -> np.ndarray:
    if "lfw" not in _LFW_CACHE:
        import skimage.data

        _LFW_CACHE["lfw"] = skimage.data.lfw_subset()
    grey = (_LFW_CACHE["lfw"][i] * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC)
    return np.repeat(np.asarray(img)[..., None], 3, axis=2)


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


class ImageFolderDataset(Dataset):
    """Images under `root`. With `labels_from_subfolders`, `root/<label>/*.jpg` gives labels.

    Ids are the relative path without extension, so they are stable across machines.
    """

    name = "folder"

    def __init__(
        self,
        root: str,
        labels_from_subfolders: bool = True,
        recursive: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        limit: int | None = None,
    ) -> None:
        super().__init__(limit)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"dataset.root: folder not found: {self.root}")
        self.labels_from_subfolders = labels_from_subfolders
        self.recursive = recursive
        self.extensions = tuple(e.lower() for e in extensions)

    def _build(self) -> list[ImageRecord]:
        pattern = "**/*" if self.recursive else "*"
        files = sorted(p for p in self.root.glob(pattern) if p.is_file() and p.suffix.lower() in self.extensions)
        recs = []
        for p in files:
            rel = p.relative_to(self.root)
            label = rel.parts[0] if self.labels_from_subfolders and len(rel.parts) > 1 else None
            recs.append(ImageRecord(rel.with_suffix("").as_posix(), str(p), lambda p=p: load_image_file(p), label,
                                    file=str(p)))
        return recs


class ManifestDataset(Dataset):
    """A CSV or Parquet table with a `path` column and optional `label`, `subject`, `id` and metadata.

    Relative paths are resolved against `root` (default: the manifest's folder). Every other column
    is kept as metadata (for example age, gender, semg) for subgroup and observational analyses.
    """

    name = "manifest"

    def __init__(
        self,
        path: str,
        root: str | None = None,
        path_column: str = "path",
        label_column: str | None = "label",
        subject_column: str | None = "subject",
        id_column: str | None = "id",
        limit: int | None = None,
    ) -> None:
        super().__init__(limit)
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ValueError(f"dataset.path: manifest not found: {self.path}")
        self.root = Path(root).expanduser() if root else self.path.parent
        self.path_column = path_column
        self.label_column = label_column
        self.subject_column = subject_column
        self.id_column = id_column

    def _build(self) -> list[ImageRecord]:
        import pandas as pd

        table = pd.read_parquet(self.path) if self.path.suffix == ".parquet" else pd.read_csv(self.path)
        if self.path_column not in table.columns:
            raise ValueError(
                f"dataset.path_column: column '{self.path_column}' not in {self.path.name}; "
                f"columns are: {', '.join(map(str, table.columns))}"
            )
        special = {self.path_column, self.label_column, self.subject_column, self.id_column}
        recs = []
        for _, row in table.iterrows():
            p = Path(str(row[self.path_column]))
            p = p if p.is_absolute() else self.root / p
            image_id = str(row[self.id_column]) if self.id_column in table.columns else Path(
                str(row[self.path_column])).with_suffix("").as_posix()
            meta = {k: _plain(v) for k, v in row.items() if k not in special}
            recs.append(
                ImageRecord(
                    image_id,
                    str(p),
                    lambda p=p: load_image_file(p),
                    label=_opt_str(row, self.label_column),
                    subject=_opt_str(row, self.subject_column),
                    metadata=meta,
                    file=str(p),
                )
            )
        return recs


FER2013_LABELS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


class Fer2013Dataset(Dataset):
    """The FER2013 CSV layout: `emotion` (0-6), `pixels` (48*48 space-separated), optional `Usage`."""

    name = "fer2013"

    def __init__(self, path: str, usage: str | None = None, upscale: int = 192, limit: int | None = None):
        super().__init__(limit)
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ValueError(f"dataset.path: FER2013 CSV not found: {self.path}")
        self.usage = usage
        self.upscale = upscale

    def _build(self) -> list[ImageRecord]:
        import pandas as pd

        table = pd.read_csv(self.path)
        missing = {"emotion", "pixels"} - set(table.columns)
        if missing:
            raise ValueError(f"dataset.path: {self.path.name} lacks FER2013 columns {sorted(missing)}")
        if self.usage is not None:
            table = table[table["Usage"] == self.usage]
        recs = []
        for i, row in table.iterrows():
            recs.append(
                ImageRecord(
                    f"fer2013_{i:05d}",
                    f"{self.path.name}#{i}",
                    lambda px=row["pixels"]: _fer_pixels(px, self.upscale),
                    label=FER2013_LABELS[int(row["emotion"])],
                )
            )
        return recs


def _fer_pixels(pixels: str, size: int) -> np.ndarray:
    try:
        vals = np.array([int(v) for v in str(pixels).split()], dtype=np.uint8)
        grey = vals.reshape(48, 48)
    except ValueError as exc:
        raise ImageLoadError(f"bad FER2013 pixel string: {exc}") from None
    img = Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC)
    return np.repeat(np.asarray(img)[..., None], 3, axis=2)


def _opt_str(row: Any, column: str | None) -> str | None:
    if not column or column not in row.index:
        return None
    v = row[column]
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
