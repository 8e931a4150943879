"""The user's datasets: image folders, CSV/Parquet manifests and FER2013-style CSVs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.data.records import IMAGE_EXTENSIONS, Dataset, ImageLoadError, ImageRecord, load_image_file


class ImageFolderDataset(Dataset):
    """Images under `root`. With `labels_from_subfolders`, `root/<label>/*.jpg` gives labels.

    Ids are the relative path without extension, so they are stable across machines; where two files
    would share one (`a.jpg` beside `a.png`), each keeps its extension (`a.jpg`, `a.png`), so ids stay
    unique and do not depend on which files happen to be listed first.
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
        stems = Counter(p.relative_to(self.root).with_suffix("").as_posix() for p in files)
        recs = []
        for p in files:
            rel = p.relative_to(self.root)
            label = rel.parts[0] if self.labels_from_subfolders and len(rel.parts) > 1 else None
            stem = rel.with_suffix("").as_posix()
            image_id = stem if stems[stem] == 1 else rel.as_posix()
            recs.append(ImageRecord(image_id, str(p), lambda p=p: load_image_file(p), label, file=str(p)))
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
