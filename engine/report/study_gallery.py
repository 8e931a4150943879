"""replicate/gallery.html: every face of every property job of a study, filterable, in one file.

Filters: experiment (property and direction), classifier, the emotion the classifier gave the sham,
valid edits only, significant only (that classifier's shift of that emotion in that experiment is
significant after correction); sort by the change of the sham's top class; a click opens the pair
large. The page requests nothing and runs only its own script: the face data is a JSON block, cards
are built with `textContent` (a hostile file name stays text), and the Content-Security-Policy
admits exactly one script, by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.report.contrasts import edit_of, largest_strength, top_class_deltas

_SCRIPT = r"""
const data = JSON.parse(document.getElementById('faces').textContent);
const $ = (id) => document.getElementById(id);
function options(select, values) {
  for (const v of values) { const o = document.createElement('option'); o.value = v; o.textContent = v; select.appendChild(o); }
}
options($('experiment'), ['all', ...new Set(data.faces.map(f => f.experiment))]);
options($('classifier'), data.classifiers);
options($('emotion'), ['all', ...data.emotions]);
function render() {
  const exp = $('experiment').value, clf = $('classifier').value, emo = $('emotion').value;
  const validOnly = $('valid').checked, sigOnly = $('significant').checked, order = $('sort').value;
  let shown = data.faces.filter(f => (exp === 'all' || f.experiment === exp) && f.by[clf]
    && (emo === 'all' || f.by[clf].top === emo) && (!validOnly || f.valid === true) && (!sigOnly || f.by[clf].significant));
  const key = (f) => f.by[clf].delta;
  if (order === 'most negative') shown.sort((a, b) => key(a) - key(b));
  else if (order === 'most positive') shown.sort((a, b) => key(b) - key(a));
  else if (order === 'largest |change|') shown.sort((a, b) => Math.abs(key(b)) - Math.abs(key(a)));
  const grid = $('grid'); grid.replaceChildren();
  for (const f of shown) {
    const card = document.createElement('div'); card.className = 'card' + (f.valid === false ? ' invalid' : '');
    for (const role of ['sham', 'edit']) {
      const img = document.createElement('img'); img.src = f[role]; img.alt = role; img.title = role;
      img.addEventListener('click', () => { $('bigsham').src = f.sham; $('bigedit').src = f.edit;
        $('bigcaption').textContent = f.id + ' · ' + f.experiment; $('big').className = 'open'; });
      card.appendChild(img);
    }
    const cap = document.createElement('div'); cap.className = 'cap';
    const b = f.by[clf];
    cap.textContent = f.id + ' · ' + f.experiment + ' · ' + b.top + ' ' + (b.delta >= 0 ? '+' : '') + b.delta.toFixed(3)
      + (f.valid === false ? ' · audit: ' + f.reasons : '') + (b.significant ? ' · significant' : '');
    card.appendChild(cap); grid.appendChild(card);
  }
  $('count').textContent = shown.length + ' of ' + data.faces.length + ' faces';
}
for (const id of ['experiment', 'classifier', 'emotion', 'valid', 'significant', 'sort']) $(id).addEventListener('change', render);
$('big').addEventListener('click', () => { $('big').className = ''; });
render();
"""
_CSS = """body{font:13px system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
.bar{display:flex;gap:1em;flex-wrap:wrap;align-items:center;margin-bottom:1em}
#grid{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;box-shadow:0 1px 3px #0003;padding:4px;width:236px}
.card img{width:114px;height:114px;cursor:zoom-in;margin:1px}.card.invalid{outline:2px solid #c33}
.cap{font-size:11px;word-break:break-all}#big{display:none}#big.open{display:flex;position:fixed;inset:0;
background:#000c;align-items:center;justify-content:center;flex-direction:column;cursor:zoom-out}
#big img{width:min(44vw,512px);margin:4px}#bigcaption{color:#fff}"""


def _data_uri(path: Path) -> str | None:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else None


def study_faces(jobs: list[Path]) -> dict[str, Any]:
    """The page's data: one entry per face of every property job that wrote thumbnails."""
    faces, classifiers, emotions = [], set(), set()
    for job in jobs:
        edit = edit_of(job)
        index = job / "thumbs" / "index.csv"
        if edit.get("control_of") or edit.get("property") == "none" or not index.exists():
            continue
        thumbs = pd.read_csv(index)
        m = pd.read_parquet(job / "measurements.parquet")
        m = m[m["top1"].notna()]  # emotion classifiers only
        strength = largest_strength(m)
        tests = pd.read_csv(job / "stats.csv") if (job / "stats.csv").exists() else pd.DataFrame()
        sig = set()
        if len(tests):
            t = tests[(tests["test"] == "wilcoxon") & np.isclose(tests["strength"], strength) & tests["reject"].astype(bool)]
            sig = {(r.classifier, r.output) for r in t.itertuples()}
        audit = pd.read_csv(job / "audit.csv") if (job / "audit.csv").exists() else pd.DataFrame()
        verdict = {r.image_id: (bool(r.valid), str(r.reasons) if isinstance(r.reasons, str) else "")
                   for r in audit.itertuples()} if "valid" in audit else {}
        by_face: dict[str, dict[str, Any]] = {}
        for clf in sorted(m["classifier"].unique()):
            classifiers.add(str(clf))
            for r in top_class_deltas(m, clf, strength).itertuples():
                top = str(r.top_class)
                emotions.add(top)
                by_face.setdefault(r.image_id, {})[str(clf)] = {
                    "top": top, "delta": float(r.delta), "significant": (clf, top) in sig}
        label = f"{edit['experiment']} ({edit.get('property')}, {edit.get('direction') or '–'})"
        for row in thumbs.itertuples():
            sham_uri, edit_uri = _data_uri(job / "thumbs" / row.sham), _data_uri(job / "thumbs" / row.edit)
            if row.image_id not in by_face or not sham_uri or not edit_uri:
                continue
            valid, reasons = verdict.get(row.image_id, (None, ""))
            faces.append({"id": str(row.image_id), "experiment": label, "sham": sham_uri, "edit": edit_uri,
                          "valid": valid, "reasons": reasons, "by": by_face[row.image_id]})
    return {"faces": faces, "classifiers": sorted(classifiers), "emotions": sorted(emotions)}


def study_gallery_page(data: dict[str, Any]) -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    blob = json.dumps(data).replace("</", "<\\/")  # the JSON block cannot be closed from inside
    controls = ("<label>experiment <select id='experiment'></select></label>"
                "<label>classifier <select id='classifier'></select></label>"
                "<label>sham's emotion <select id='emotion'></select></label>"
                "<label><input type='checkbox' id='valid'> valid edits only</label>"
                "<label><input type='checkbox' id='significant'> significant only</label>"
                "<label>sort <select id='sort'><option>dataset order</option><option>largest |change|</option>"
                "<option>most negative</option><option>most positive</option></select></label><span id='count'></span>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
            f"content=\"{csp}\"><title>Study gallery</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape('Study gallery: sham | edit, every face')}</h1>"
            "<p>Each card: the sham and the strongest edit; the caption gives the classifier's top class for the "
            "sham and its change (edit − sham). Red outline: the edit failed its audit. Click to enlarge.</p>"
            f"<div class='bar'>{controls}</div><div id='grid'></div>"
            "<div id='big'><div><img id='bigsham' alt='sham'><img id='bigedit' alt='edit'></div>"
            "<div id='bigcaption'></div></div>"
            f"<script type='application/json' id='faces'>{blob}</script><script>{_SCRIPT}</script></body></html>")
