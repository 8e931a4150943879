"""Share of the demo's faces that the multi-face analyser finds, against a person's count.

`VISIBLE` is how many faces a person sees in each sharp photo (counted by eye on the full-size
files: a face counts when both eyes or a clear profile are visible; the two people cut off at the
edges of the bus photo show no face). The script runs the analyser the demo uses (`faces.multi`),
prints per photo the faces found, those skipped as too small, and the projected inter-ocular
distance of each found face, then the share found over all photos and over the LFW faces and
portraits. With `--out`, it saves each photo with the found faces boxed (PNG) to look at.

    python scripts/faces_found.py [--out /tmp/faces_found]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from engine.data import DemoDataset
from engine.faces import FaceAnalyzer

VISIBLE = {"photo_table": 6, "photo_aligned": 1, "photo_pitch": 2, "photo_bus": 2, "photo_children": 5,
           "photo_couple": 2}
LEFT_IRIS, RIGHT_IRIS = 468, 473


def _source_points(fa) -> np.ndarray:  # noqa: ANN001 - FaceAnalysis
    """The face's landmarks in source-photo pixels (they are stored in crop pixels)."""
    inv = cv2.invertAffineTransform(np.asarray(fa.crop_from_source, dtype=np.float64)[:2])
    return fa.landmarks[:, :2] @ inv[:, :2].T + inv[:, 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    analyzer = FaceAnalyzer(multi=True)
    found_total = seen_total = 0
    for rec in DemoDataset(n_lfw=0, portraits=False):
        rgb = rec.load()
        faces = analyzer.analyse_all(rec.image_id, rgb)
        found = [fa for fa, _ in faces if fa.ok]
        small = [fa.reason for fa, _ in faces if not fa.ok]
        iods = [float(np.linalg.norm(np.subtract(*_source_points(fa)[[LEFT_IRIS, RIGHT_IRIS]]))) for fa in found]
        seen = VISIBLE[rec.image_id]
        found_total += min(len(found) + len(small), seen)
        seen_total += seen
        print(f"{rec.image_id}: {len(found)} analysed + {len(small)} too small, of {seen} visible; "
              f"IOD px {[round(v) for v in iods]}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            shown = rgb.copy()
            for k, fa in enumerate(found):
                pts = _source_points(fa)
                (x0, y0), (x1, y1) = pts.min(0).astype(int), pts.max(0).astype(int)
                cv2.rectangle(shown, (x0, y0), (x1, y1), (0, 255, 0), 3)
                cv2.putText(shown, str(k), (x0, max(0, y0 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 0, 0), 3)
            cv2.imwrite(str(args.out / f"{rec.image_id}.png"), cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    print(f"sharp photos: {found_total}/{seen_total} visible faces found ({found_total / seen_total:.0%})")
    single = DemoDataset(photos=False)
    ok = sum(analyzer.analyse(r.image_id, r.load())[0].ok for r in single)
    print(f"portraits and LFW faces: {ok}/{len(single)} found ({ok / len(single):.0%})")
    analyzer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
