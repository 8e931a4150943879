"""The self-contained HTML gallery: original | sham | edits | difference, with top predictions.

It is written after the run from the records of the first faces: each condition's pixels are read
back from the work cache by the key its record holds, so the pipeline keeps no images for the report.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from engine.cache import WorkCache
from engine.pipeline.record import ImageResult
from engine.report.files import write_text
from engine.report.html import CSP


def _png_data_uri(rgb: np.ndarray, size: int) -> str:
    img = Image.fromarray(rgb)
    if img.width != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def difference_map(a: np.ndarray, b: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|a - b| per pixel, amplified and shown with the 'magma' colour map (black = unchanged)."""
    import matplotlib

    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2) / 255.0
    d = np.clip(d * gain, 0, 1)
    return (matplotlib.colormaps["magma"](d)[..., :3] * 255).astype(np.uint8)


_GALLERY_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em} .meta{color:#555;font-size:.9em}
table.face{border-collapse:collapse;margin:1.2em 0;background:#fff;box-shadow:0 1px 3px #0002}
table.face td{padding:6px;vertical-align:top;text-align:center;font-size:.78em}
table.face th{font-size:.85em;background:#eee;padding:4px 8px;text-align:left}
.bar{height:8px;background:#4a7fd0;display:inline-block;vertical-align:middle}
.pred{text-align:left;white-space:nowrap} .cname{font-weight:600;margin-top:4px}
.flag{color:#b00;font-weight:600}
h2{font-size:1.15em;margin-top:2em}
table.skipped{border-collapse:collapse;background:#fff;font-size:.85em}
table.skipped td,table.skipped th{padding:3px 8px;text-align:left;border-bottom:1px solid #eee}
"""


def write_gallery(out_dir: Path, results: Sequence[ImageResult], cache: WorkCache, classifiers: Mapping[str, Any],
                  cfg: Any, title: str, audit: pd.DataFrame | None = None,
                  skipped: pd.DataFrame | None = None) -> Path:
    """Self-contained HTML (images inline): original | sham | each edit | difference, with top predictions.

    Args:
        out_dir: the run folder (the page goes to `gallery/index.html`).
        results: the faces to show, in order (their pixels are read from `cache`).
        cache: the work cache the run wrote.
        classifiers: name -> classifier (labels for the prediction bars).
        cfg: `ReportConfig` (thumb size, top k).
        title: the page title.
        audit: the audit table, to flag edits that failed their checks.
        skipped: the run's skipped.csv rows, listed last, so a reader of the page sees what was left out.
    """
    gdir = out_dir / "gallery"
    gdir.mkdir(parents=True, exist_ok=True)
    # No script, no request: every image is a data URI, and the policy forbids anything else.
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
             f"content=\"{CSP}\"><title>{html.escape(title)}</title>",
             f"<style>{_GALLERY_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p class='meta'>Each row: the aligned original, the sham (same pipeline, strength 0), every edit, "
             "and |edit − sham| amplified 4× (black = unchanged). Bars: classifier probabilities.</p>"]
    invalid: dict[tuple[str, float], str] = {}
    if audit is not None and not audit.empty and "valid" in audit:
        bad = audit[~audit["valid"].astype(bool)]
        invalid = {(r.image_id, float(r.strength)): str(getattr(r, "reasons", "")).replace(";", ", ")
                   for r in bad.itertuples()}
    for result in results:
        pixels = [cache.get_image(c.image_kind, c.image_key) for c in result.conditions]
        cells, heads = [], []
        for cond, img in zip(result.conditions, pixels, strict=True):
            why = invalid.get((result.record.image_id, cond.strength))
            flag = f"<br><span class='flag'>audit: {html.escape(why or 'invalid')}</span>" if why is not None else ""
            # As wide as the image: a long audit reason wraps instead of widening its column.
            heads.append(f"<th style='max-width:{cfg.thumb_size}px'>{html.escape(cond.label)}{flag}</th>")
            cells.append(_cell(img, result, cond.label, classifiers, cfg))
        sham = next((k for k, c in enumerate(result.conditions) if c.name == "sham"), 0)
        last = len(result.conditions) - 1
        if last != sham:
            if pixels[last] is not None and pixels[sham] is not None:
                diff = difference_map(pixels[last], pixels[sham])
                cells.append(f"<td><img src='{_png_data_uri(diff, cfg.thumb_size)}' width='{cfg.thumb_size}'></td>")
            else:
                cells.append(f"<td>{_MISSING}</td>")
            heads.append(f"<th>|{html.escape(result.conditions[last].label)} − sham|</th>")
        parts.append(f"<table class='face'><tr><th colspan='{len(cells)}'>{html.escape(result.record.image_id)}"
                     f" <span class='meta'>{html.escape(result.record.source)}</span></th></tr>"
                     f"<tr>{''.join(heads)}</tr><tr>{''.join(cells)}</tr></table>")
    if skipped is not None and not skipped.empty:
        rows = "".join(f"<tr><td>{html.escape(str(r.image_id))}</td><td class='meta'>{html.escape(str(r.source))}"
                       f"</td><td>{html.escape(str(r.reason))}</td></tr>" for r in skipped.itertuples())
        parts.append(f"<h2>Skipped ({len(skipped)})</h2><p class='meta'>Images and faces the run could not use "
                     f"(skipped.csv).</p><table class='skipped'><tr><th>record</th><th>source</th><th>reason</th>"
                     f"</tr>{rows}</table>")
    parts.append("</body></html>")
    path = gdir / "index.html"
    write_text(path, "\n".join(parts))
    return path


#: Shown where the work cache no longer holds an image (the numbers come from the record regardless).
_MISSING = "<div class='meta'>image no longer in the work cache</div>"


def _cell(img: np.ndarray | None, result: ImageResult, label: str, classifiers: Mapping[str, Any], cfg: Any) -> str:
    bars = []
    for name, clf in classifiers.items():
        p = result.predictions[(name, label)]
        if not np.isfinite(p).any():  # e.g. blendshapes when the face was not found on this image
            bars.append(f"<div class='cname'>{html.escape(name)}</div><div class='pred'>no output</div>")
            continue
        p = np.nan_to_num(p, nan=0.0)
        order = np.argsort(-p)[: cfg.top_k]
        rows = "".join(
            f"<div class='pred'>{html.escape(str(clf.labels[k])[:10])} "
            f"<span class='bar' style='width:{int(60 * p[k])}px'></span> {p[k]:.2f}</div>"
            for k in order
        )
        bars.append(f"<div class='cname'>{html.escape(name)}</div>{rows}")
    picture = _MISSING if img is None else f"<img src='{_png_data_uri(img, cfg.thumb_size)}' width='{cfg.thumb_size}'>"
    return f"<td>{picture}{''.join(bars)}</td>"
