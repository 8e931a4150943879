"""`python -m engine.calibrate`: how far each judge moves when no property changes, and thresholds from it.

An audit threshold that says "nothing else moved" is only as good as the noise it stands above. This
command measures that noise on real faces (default: the demo set's tuning half, every face). Each face
is paired with versions of itself that change no facial property, and every judge compares the pair
exactly as the audit compares a sham with an edit:

* `jpeg_q85`: re-encoded as JPEG at quality 85;
* `shift_1px`, `shift_2px`: moved by 1 px right, by 2 px down (edge pixels repeated);
* `scale_up_2pct`, `scale_down_2pct`: scaled by +-2 % about the crop centre;
* `brighter_3pct`, `darker_3pct`: brightness +-3 %;
* `retest`: the whole face analysis run again on the photo moved by half a pixel, so the landmarker
  re-detects the face and the aligner cuts a new crop (the detector's own test-retest);
* the sham against the original is exactly no change for every built-in editor (each declares
  `sham_is_input`, held by tests/test_editor_contract.py), so it adds no noise and is not repeated here.

The judges are the audit's own plus every judge an editor's policy adds (all options of the `editor`
config group are asked). Writes `calibration.csv` (every pair's columns) and `calibration_noise.csv`
(per transform and measure: median, 90th, 95th and 99th percentile of |value|), and the thresholds
file: each non-target threshold is the `--percentile` of |noise| over all transforms and faces, rounded
up; the target thresholds are effect sizes a researcher would accept, not noise. The file records its
provenance (date, git commit, data, faces, percentile).

    python -m engine.calibrate [--percentile 99] [--out conf/audit/thresholds/calibrated.yaml]
        [--folder docs/calibration] [--write-docs] [hydra overrides, e.g. dataset.split=tuning dataset.n_lfw=40]
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

log = logging.getLogger("engine.calibrate")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "conf" / "audit" / "thresholds" / "calibrated.yaml"
DEFAULT_OVERRIDES = ("dataset.split=tuning",)

#: Target thresholds: the smallest change a researcher would accept as "the property moved" (at
#: strength 1; they scale with strength). Not noise: an edit must clear them by design.
TARGETS = {"min_age_change": 5.0, "min_p_target_change": 0.2, "min_symmetry_change": 0.3}
#: Non-target thresholds from noise: the threshold field -> the audit column whose |value| it bounds.
NOISE_THRESHOLDS = {
    "max_age_change_nontarget": "delta_est_age",
    "max_p_male_change_nontarget": "delta_est_p_male",
    "max_blendshape_change": "blendshape_change",
    "max_symmetry_change_nontarget": "delta_symmetry_index_rel",
}
#: Measures reported in the noise table (a target's noise shows how far its threshold is above it).
#: The pairs have no edit mask, so the perceptual judge's "outside" columns cover the whole crop.
REPORTED = ("delta_est_age", "delta_est_p_male", "blendshape_change", "identity_distance",
            "delta_symmetry_index_rel", "delta_image_asymmetry_rel", "delta_image_asymmetry_detail_rel",
            "mouth_corner_drop", "lpips_out", "ssim_out", "outside_change")


def warp_crop(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """`img` moved by the 2x3 affine `m` (bilinear, edges replicated), same size: a nuisance transform."""
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def scale_crop(img: np.ndarray, factor: float) -> np.ndarray:
    """`img` scaled by `factor` about its centre, same size."""
    h, w = img.shape[:2]
    return warp_crop(img, cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, factor))


def _brightness(img: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(np.round(img.astype(np.float64) * factor), 0, 255).astype(np.uint8)


#: Transforms of an aligned crop (uint8 (H, W, 3)) that change no facial property.
CROP_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg_q85": lambda x: _jpeg(x, 85),
    "shift_1px": lambda x: warp_crop(x, np.float32([[1, 0, 1], [0, 1, 0]])),
    "shift_2px": lambda x: warp_crop(x, np.float32([[1, 0, 0], [0, 1, 2]])),
    "scale_up_2pct": lambda x: scale_crop(x, 1.02),
    "scale_down_2pct": lambda x: scale_crop(x, 0.98),
    "brighter_3pct": lambda x: _brightness(x, 1.03),
    "darker_3pct": lambda x: _brightness(x, 0.97),
}


def _round_up(value: float, digits: int = 2) -> float:
    """`value` rounded up to `digits` significant digits (a threshold must not sit below its noise)."""
    if not math.isfinite(value) or value <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.ceil(value / step) * step, 10)


def _policy_judges(cfg_overrides: list[str]) -> list:
    """One of every judge that an editor's policy adds, over all options of the `editor` group."""
    import conf
    from engine.config import check_component, compose_config

    judges: dict[str, object] = {}
    for option in sorted((Path(conf.__file__).parent / "editor").glob("*.yaml")):
        cfg = compose_config([*cfg_overrides, f"editor={option.stem}"])
        for judge in check_component("editor", cfg.editor).audit_policy().judges:
            judges.setdefault(judge.name, judge)
    return list(judges.values())


def faces(spec, cache) -> list:  # noqa: ANN001 - RunSpec, WorkCache
    """Every analysed face of the spec's dataset: (LoadedImage, source record) pairs, via the pipeline."""
    from engine.pipeline import Pipeline

    pipe = Pipeline(spec.faces, spec.editor, (), dict(spec.classifiers), spec.runner, cache, spec.seed,
                    paired=False, overlap=False)
    records = list(spec.dataset)
    with ThreadPoolExecutor(max_workers=max(1, spec.runner.workers)) as pool:
        chunk = pipe._load_chunk(0, records, pool)
    for im in chunk.images:
        if im.crop is None and im.skipped is None:  # finished elsewhere: the crop is in the cache
            im.crop = cache.get_image("crop", im.analysis_key)
    by_id = {r.image_id: r for r in records}
    return [(im, by_id[im.record.metadata.get("source_image", im.record.image_id)])
            for im in chunk.images if im.crop is not None]


def _retest(spec, face, record) -> np.ndarray | None:  # noqa: ANN001
    """The face's crop from a second analysis of its photo moved by half a pixel (None: not found)."""
    rgb = record.load()
    moved = warp_crop(rgb, np.float32([[1, 0, 0.5], [0, 1, 0.5]]))
    multi = getattr(spec.faces, "multi", False) is True
    found = spec.faces.analyse_all(record.image_id, moved) if multi else [spec.faces.analyse(record.image_id, moved)]
    target = face.analysis.crop_from_source
    best, best_err = None, np.inf
    for fa, crop in found:
        if fa.ok and crop is not None:
            err = float(np.abs(fa.crop_from_source - target).max())
            if err < best_err:
                best, best_err = crop, err
    return best if best_err < 10.0 else None


def measure(spec, cache, judges) -> pd.DataFrame:  # noqa: ANN001
    """Audit rows of (original, transformed) pairs: one per face and transform."""
    from engine.audit import AuditedCondition, AuditStage, AuditThresholds
    from engine.cache import pixels_hash
    from engine.types import AuditPolicy

    stage = AuditStage(judges, AuditPolicy("none"), AuditThresholds(), cache)
    loaded = faces(spec, cache)
    log.info("faces=%d transforms=%d", len(loaded), len(CROP_TRANSFORMS) + 1)
    rows = []
    ids = [im.record.image_id for im, _ in loaded]
    originals = np.stack([im.crop for im, _ in loaded])
    variants = {name: np.stack([fn(c) for c in originals]) for name, fn in CROP_TRANSFORMS.items()}
    retest = [_retest(spec, im, rec) for im, rec in loaded]
    keep = [i for i, r in enumerate(retest) if r is not None]
    batch = 16
    for name, images in [*variants.items(), ("retest", None)]:
        index = keep if images is None else list(range(len(loaded)))
        for start in range(0, len(index), batch):
            part = index[start: start + batch]
            ref = torch.from_numpy(originals[part]).permute(0, 3, 1, 2).contiguous()
            pics = np.stack([retest[i] for i in part]) if images is None else images[part]
            edit = torch.from_numpy(pics).permute(0, 3, 1, 2).contiguous()
            mask = torch.zeros(len(part), 1, *ref.shape[-2:])
            meta = [{"transform": name} for _ in part]
            got = stage.observe(
                AuditedCondition(0.0, ref, [pixels_hash(originals[i]) for i in part], mask, meta),
                [AuditedCondition(1.0, edit, [pixels_hash(p) for p in pics], mask, meta)],
                [ids[i] for i in part])
            rows += got
    stage.close()
    df = pd.DataFrame(rows).rename(columns={"edit_transform": "transform"})
    return df.drop(columns=["strength"])


def noise_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per transform (and over all) and measure: n and percentiles of |value|."""
    out = []
    for transform, group in [*df.groupby("transform", sort=False), ("all", df)]:
        for column in REPORTED:
            if column not in group:
                continue
            values = group[column].astype(float).dropna().to_numpy()
            if column.startswith("ssim"):  # a similarity: its noise is how far it falls below 1
                column, values = f"1-{column}", 1.0 - values
            values = np.abs(values)
            if len(values) == 0:
                continue
            out.append({"transform": transform, "measure": column, "n": len(values),
                        **{f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 95, 99)},
                        "max": float(values.max())})
    return pd.DataFrame(out)


def thresholds(df: pd.DataFrame, percentile: float) -> dict[str, float]:
    """Non-target thresholds at `percentile` of |noise| over every transform and face; targets as set."""
    from engine.audit import AuditThresholds

    out: dict[str, float] = {f: getattr(AuditThresholds(), f) for f in ("max_outside_change", "max_identity_distance")}
    for field, column in NOISE_THRESHOLDS.items():
        out[field] = _round_up(float(np.nanpercentile(df[column].astype(float).abs(), percentile)))
    out.update(TARGETS)
    return out


#: Where `--write-docs` puts the noise table (between these markers of docs/EDITORS.md).
DOCS = ROOT / "docs" / "EDITORS.md"
DOC_BEGIN, DOC_END = "<!-- calibration:begin -->", "<!-- calibration:end -->"


def noise_markdown(table: pd.DataFrame, values: dict[str, float], provenance: dict[str, object]) -> str:
    """The noise table as markdown: p99 of |value| per transform, then over all, and the threshold set."""
    bound_by = {column: field for field, column in NOISE_THRESHOLDS.items()}
    transforms = [t for t in table["transform"].unique() if t != "all"]
    lines = [f"Measured by `python -m engine.calibrate --write-docs` on {provenance['made']} (git "
             f"{str(provenance['git'])[:7]}; `{provenance['data']}`: {provenance['faces']} faces, "
             f"{provenance['pairs']} pairs). Cells: 99th percentile of |value| per nuisance transform; "
             "`all`: over every pair.",
             "",
             "| measure | " + " | ".join(transforms) + " | all p50 | all p99 | threshold |",
             "|---|" + "---|" * (len(transforms) + 3)]
    for measure, group in table.groupby("measure", sort=False):
        cells = {row["transform"]: row for _, row in group.iterrows()}
        field = bound_by.get(measure)
        threshold = f"{field} = {values[field]}" if field else "–"
        lines.append(f"| {measure} | " + " | ".join(f"{cells[t]['p99']:.3g}" if t in cells else "–" for t in transforms)
                     + f" | {cells['all']['p50']:.3g} | {cells['all']['p99']:.3g} | {threshold} |")
    return "\n".join(lines)


def write_docs(text: str, path: Path = DOCS) -> None:
    from engine.report.files import write_between_markers

    try:
        write_between_markers(path, DOC_BEGIN, DOC_END, text)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def write_thresholds(path: Path, values: dict[str, float], provenance: dict[str, object]) -> None:
    import yaml

    lines = ["# Audit thresholds calibrated on judge noise by `python -m engine.calibrate` (do not edit by hand:",
             "# rerun it). Non-target thresholds: a high percentile of how far each judge moves when no",
             "# property changes; targets: effect sizes (see docs/EDITORS.md, Calibration)."]
    body = {**{k: values[k] for k in sorted(values)}, "max_lpips_outside": None, "provenance": provenance}
    path.write_text("\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--percentile", type=float, default=99.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="thresholds file to write")
    p.add_argument("--write-docs", action="store_true", help="write the noise table into docs/EDITORS.md")
    p.add_argument("--folder", type=Path, default=ROOT / "docs" / "calibration", help="where the tables go")
    args, overrides = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from engine.cache import WorkCache
    from engine.config import compose_config
    from engine.report.provenance import git_revision
    from engine.spec import RunSpec

    overrides = [*DEFAULT_OVERRIDES, "runner.progress=off", *overrides]
    spec = RunSpec.from_config(compose_config(overrides))
    cache = WorkCache(spec.cache.dir)
    judges = [*spec.audit.judges(spec.runner.device, getattr(spec.faces, "landmarker", None)),
              *_policy_judges(overrides)]
    t0 = time.perf_counter()
    df = measure(spec, cache, judges)
    table = noise_table(df)
    args.folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.folder / "calibration.csv", index=False)
    table.to_csv(args.folder / "calibration_noise.csv", index=False)
    values = thresholds(df, args.percentile)
    provenance = {"made": time.strftime("%Y-%m-%d"), "by": "python -m engine.calibrate",
                  "git": git_revision().get("commit"), "data": " ".join(o for o in overrides if "progress" not in o),
                  "faces": int(df["image_id"].nunique()), "pairs": len(df), "percentile": args.percentile,
                  "transforms": sorted(df["transform"].unique().tolist())}
    write_thresholds(args.out, values, provenance)
    spec.faces.close()
    if args.write_docs:
        write_docs(noise_markdown(table, values, provenance))
    print(table[table["transform"] == "all"].to_string(index=False))
    print(f"\nthresholds -> {args.out} ({time.perf_counter() - t0:.0f} s)")
    for k in sorted(values):
        print(f"  {k}: {values[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
