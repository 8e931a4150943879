"""Look before adopting: every sharp demo face as original | editor defaults | candidate settings.

A search scored by the judges alone walks toward whatever the judges reward, and some of that looks
fake to a person (deep cheek hollows drew bruise-like blotches; strong mottling and pore relief
looked like grime; docs/EDITORS.md, "Tuning on the tuning half"). So candidate settings from
`scripts/tuning.py` are looked at on every sharp face of both halves (the portraits and every face
of the sharp photos, at full crop resolution before the sheet is shrunk) before they become defaults.

    python scripts/review_settings.py EXPERIMENT CANDIDATE [--out outputs/review.png] [--size 160] [--cols 3]

CANDIDATE is a trial folder (or its objective.json) from a tuning sweep, whose `editor.` overrides
are used, or a comma-separated list of overrides (`editor.sag=0.5,editor.texture=0`). Every edit is
at strength 1 with the run seed 0, as the acceptance runs make it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def candidate_overrides(text: str) -> list[str]:
    """The `editor.` overrides of a trial folder / objective.json, or of a comma-separated list."""
    path = Path(text)
    if path.is_dir():
        path = path / "objective.json"
    if path.is_file():
        overrides = json.loads(path.read_text()).get("overrides", [])
    else:
        overrides = [o.strip() for o in text.split(",") if o.strip()]
    picked = [o for o in overrides if o.startswith("editor.")]
    if not picked:
        raise SystemExit(f"{text}: no editor.* overrides (a trial folder, its objective.json, or key=value,...)")
    return picked


def tile(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def sheet(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    """Tiles in rows of `cols`, the last row padded with black."""
    tiles = tiles + [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    return np.concatenate([np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)], 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiment")
    p.add_argument("candidate")
    p.add_argument("--out", type=Path, default=Path("outputs") / "review.png")
    p.add_argument("--size", type=int, default=160, help="pixels per image in the sheet")
    p.add_argument("--cols", type=int, default=3, help="faces per row")
    args = p.parse_args(argv)
    from engine.config import compose_config
    from engine.data import DemoDataset
    from engine.pipeline import make_face_batch
    from engine.pipeline.steps import to_uint8
    from engine.spec import RunSpec

    base = [f"experiment={args.experiment}", "classifier=dummy"]
    specs = [RunSpec.from_config(compose_config(base)),
             RunSpec.from_config(compose_config([*base, *candidate_overrides(args.candidate)]))]
    faces = []
    for record in DemoDataset(n_lfw=0):  # the sharp faces: portraits and every face of the sharp photos
        for analysis, crop in specs[0].faces.analyse_all(record.image_id, record.load()):
            if not analysis.ok:
                continue
            row = [crop]
            for spec in specs:
                result = spec.editor.edit(make_face_batch([record], [analysis], [crop]), 1.0, 0)
                row.append(to_uint8(result.images)[0])  # the pixels the engine caches and judges
            faces.append(np.concatenate([tile(t, args.size) for t in row], 1))
    for spec in specs:
        spec.faces.close()
    if not faces:
        raise SystemExit("no sharp face was found in the demo set")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet(faces, args.cols)).save(args.out)
    print(f"{len(faces)} faces (original | defaults | candidate) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
