"""One sheet of every editor at strength 1 on evaluation-half sharp faces (never tuned on), to look at.

Rows: photo_couple#0, photo_couple#1, grace_hopper. Columns: original, then the studies' editors as
their experiments configure them. Writes docs/img/editor_thumbnails.png (one third size) and the
full-size sheet next to it with `--full`.

    python scripts/thumbnails.py [--full]
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from engine.config import compose_config
from engine.data import DemoDataset
from engine.pipeline import make_face_batch
from engine.pipeline.steps import to_uint8
from engine.spec import RunSpec

STUDIES = [("age", ["experiment=age_shift"]), ("gender_male", ["experiment=gender_swap", "editor.target=male"]),
           ("gender_female", ["experiment=gender_swap", "editor.target=female"]),
           ("symmetry", ["experiment=symmetry"]), ("asymmetry", ["experiment=asymmetry"]), ("semg", ["experiment=semg"])]
recs = {r.image_id: r for r in DemoDataset(split="evaluation", n_lfw=0)}
spec0 = RunSpec.from_config(compose_config(["experiment=age_shift", "classifier=dummy"]))
faces = {}
for rid in ("photo_couple", "grace_hopper"):
    rgb = recs[rid].load()
    got = spec0.faces.analyse_all(rid, rgb) if rid.startswith("photo") else [spec0.faces.analyse(rid, rgb)]
    for k, (fa, crop) in enumerate(got):
        if fa.ok:
            faces[f"{rid}#{k}"] = (fa, crop, recs[rid])
spec0.faces.close()
rows = []
for key in ("photo_couple#0", "photo_couple#1", "grace_hopper#0"):
    fa, crop, rec = faces[key]
    row = [crop]
    for _name, ov in STUDIES:
        spec = RunSpec.from_config(compose_config([*ov, "classifier=dummy"]))
        batch = make_face_batch([rec], [fa], [crop])
        res = spec.editor.edit(batch, 1.0, 0)
        row.append(to_uint8(res.images[:1])[0])  # the pixels the engine caches and the audit judges
    rows.append(np.concatenate(row, 1))
sheet = np.concatenate(rows, 0)
OUT = Path(__file__).resolve().parents[1] / "docs" / "img"
if "--full" in sys.argv:
    Image.fromarray(sheet).save(OUT / "editor_thumbnails_full.png")
h, w = sheet.shape[:2]
Image.fromarray(sheet).resize((w // 3, h // 3), Image.Resampling.LANCZOS).save(OUT / "editor_thumbnails.png")
print("columns: original,", ", ".join(n for n, _ in STUDIES))
