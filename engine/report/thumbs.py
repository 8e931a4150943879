"""thumbs/: a small JPEG of every face's sham and strongest edit, for galleries built across runs.

Files are named by a hash of the face's id (ids come from file names, which may hold anything), and
`thumbs/index.csv` maps each id to its two files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

from engine.cache import WorkCache
from engine.pipeline.record import ImageResult
from engine.report.files import atomic_path, write_table


def write_thumbnails(out: Path, results: Sequence[ImageResult], cache: WorkCache, size: int) -> Path:
    folder = out / "thumbs"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for result in results:
        sham = next((c for c in result.conditions if c.name == "sham"), None)
        edits = [c for c in result.conditions if c.name == "edit"]
        if sham is None or not edits:
            continue
        edit = max(edits, key=lambda c: c.strength)
        stem = hashlib.sha256(result.record.image_id.encode()).hexdigest()[:16]
        names = {}
        for role, cond in (("sham", sham), ("edit", edit)):
            rgb = cache.get_image(cond.image_kind, cond.image_key)
            if rgb is None:
                continue
            name = f"{stem}_{role}.jpg"
            with atomic_path(folder / name) as tmp:
                Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS).save(tmp, format="JPEG", quality=88)
            names[role] = name
        if len(names) == 2:
            rows.append({"image_id": result.record.image_id, "strength": edit.strength, **names})
    write_table(pd.DataFrame(rows, columns=["image_id", "strength", "sham", "edit"]), folder / "index.csv")
    return folder
