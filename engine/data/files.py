"""The user's datasets: image folders, CSV/Parquet manifests and FER2013-style CSVs."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.data.records import IMAGE_EXTENSIONS, Dataset, ImageLoadError, ImageRecord, load_image_file
from engine.types import ConfigError


def _raise(reason: str) -> np.ndarray:
    raise ImageLoadError(reason)


def ids_from_paths(paths: Sequence[Path]) -> list[str]:
    """Record ids from relative paths: without the extension, unless two files share a name
    (`a.jpg` beside `a.png`), which then keep it, so ids are unique and stable."""
    stems = Counter(p.with_suffix("").as_posix() for p in paths)
    return [p.with_suffix("").as_posix() if stems[p.with_suffix("").as_posix()] == 1 else p.as_posix()
            for p in paths]


def printable(name: str) -> str:
    """A file name as text every table can hold: bytes that are not UTF-8 (Python keeps them as
    surrogates, which Parquet and CSV writers refuse) are written as `\\xNN`, so the id stays unique
    and stable while the file itself is still opened by its real name."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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

    def _walk(self) -> tuple[list[Path], list[tuple[Path, str]]]:
        """The image files under `root`, and the folders that could not be listed, with why.

        Symbolic links to folders are followed once: a link back to a folder already listed (a loop)
        is reported, not followed forever or silently dropped; so is a folder that cannot be read.
        """
        files: list[Path] = []
        problems: list[tuple[Path, str]] = []
        seen: set[str] = set()

        def unreadable(exc: OSError) -> None:
            problems.append((Path(exc.filename or self.root), f"unreadable folder: {exc.strerror or exc}"))

        for folder, dirs, names in os.walk(self.root, onerror=unreadable, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:
                problems.append((Path(folder), f"symbolic link loop: {folder} is {real}, already listed"))
                dirs[:] = []
                continue
            seen.add(real)
            dirs.sort()
            if not self.recursive:
                dirs[:] = []
            files += [Path(folder) / n for n in names if Path(n).suffix.lower() in self.extensions
                      and (Path(folder) / n).is_file()]
        return sorted(files), sorted(problems)

    def _build(self) -> list[ImageRecord]:
        files, problems = self._walk()
        recs = []
        for p, image_id in zip(files, ids_from_paths([p.relative_to(self.root) for p in files]), strict=True):
            rel = p.relative_to(self.root)
            label = rel.parts[0] if self.labels_from_subfolders and len(rel.parts) > 1 else None
            recs.append(ImageRecord(printable(image_id), printable(str(p)), lambda p=p: load_image_file(p),
                                    None if label is None else printable(label), file=str(p)))
        for folder, reason in problems:  # each becomes a skipped.csv row with its reason
            rel = printable(os.path.relpath(folder, self.root))
            recs.append(ImageRecord(f"{rel}/", printable(str(folder)), lambda r=reason: _raise(r)))
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
        encoding: str = "utf-8",
    ) -> None:
        super().__init__(limit)
        self.encoding = encoding
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ValueError(f"dataset.path: manifest not found: {self.path}")
        self.root = Path(root).expanduser() if root else self.path.parent
        self.path_column = path_column
        self.label_column = label_column
        self.subject_column = subject_column
        self.id_column = id_column

    def _build(self) -> list[ImageRecord]:

        table = self._read_table()
        if self.path_column not in table.columns:
            raise ConfigError(
                f"dataset.path_column: column '{self.path_column}' not in {self.path.name}; "
                f"columns are: {', '.join(map(str, table.columns))}"
            )
        special = {self.path_column, self.label_column, self.subject_column, self.id_column}
        ids = self._ids(table)
        recs = []
        for image_id, (_, row) in zip(ids, table.iterrows()):
            p = Path(str(row[self.path_column]))
            p = p if p.is_absolute() else self.root / p
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


    def _read_table(self):  # noqa: ANN202 - a pandas DataFrame
        import pandas as pd

        if self.path.suffix == ".parquet":
            return pd.read_parquet(self.path)
        try:
            return pd.read_csv(self.path, encoding=self.encoding)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"dataset.path: {self.path.name} is not {self.encoding} text (byte {exc.object[exc.start]:#04x} at "
                f"offset {exc.start}); save it as UTF-8, or name its encoding, e.g. dataset.encoding=latin-1"
            ) from None

    def _ids(self, table) -> list[str]:  # noqa: ANN001 - a pandas DataFrame
        """One unique, non-empty id per row, or a one-line error naming the offending rows."""
        if self.id_column in table.columns:
            raw = table[self.id_column]
            empty = [i + 2 for i, v in enumerate(raw) if v is None or (isinstance(v, float) and np.isnan(v))
                     or not str(v).strip()]  # +2: the header is line 1 of the file
            if empty:
                raise ConfigError(f"dataset.path: {self.path.name}: empty '{self.id_column}' on line(s) "
                                  f"{', '.join(map(str, empty[:5]))}{' ...' if len(empty) > 5 else ''}")
            ids = [str(v).strip() for v in raw]
        else:  # from the path: without extension, unless two files share a name
            ids = ids_from_paths([Path(str(v)) for v in table[self.path_column]])
        repeated = [k for k, n in Counter(ids).items() if n > 1]
        if repeated:
            source = f"'{self.id_column}'" if self.id_column in table.columns else "paths"
            raise ConfigError(f"dataset.path: {self.path.name}: {len(repeated)} ids repeat in {source} "
                              f"({', '.join(repeated[:5])}{' ...' if len(repeated) > 5 else ''}); ids must be unique")
        return ids


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
