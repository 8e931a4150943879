"""The per-chunk work of an experiment: load -> analyse -> edit -> classify, every step cached.

The pipeline streams the dataset in chunks (`engine.chunks` says what a chunk holds). While one chunk is edited and classified on the
device, worker threads already decode and analyse the next one. Each image's analysis, each edited
image and each prediction is stored in the content-addressed `WorkCache`, so an interrupted run that
is started again only computes what is missing, and gets bit-identical numbers. Once a chunk is
classified and audited, each image's results are also stored whole (`engine.finished`), so a re-run
of finished work replays them without opening an image.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.cache import WorkCache, key_of, pixels_hash
from engine.chunks import (
    AuditHook,
    ChunkOutput,
    Condition,
    edit_rows,
    empty_measurements,
    in_record_order,
    make_face_batch,
    select,
    tidy_rows,
    to_uint8,
)
from engine.data import ImageLoadError, ImageRecord
from engine.faces import FaceAnalyzer
from engine.finished import (
    DECODER_VERSION,
    FinishedImage,
    file_digest,
    finished_fingerprint,
    from_json_array,
    to_json_array,
)
from engine.runner import BatchRunner
from engine.types import Classifier, Editor, FaceAnalysis, FaceBatch, stable_hash

log = logging.getLogger(__name__)


def record_tag(rec: ImageRecord) -> str:
    """What of a record, beyond its pixels, an edit may depend on: its id and metadata."""
    return stable_hash([rec.image_id, rec.metadata], 16)


#: What a worker hands the main thread per record: analysis, aligned crop (None when not loaded),
#: analysis key, and the image's finished entry when it has one.
Loaded = tuple[FaceAnalysis, "np.ndarray | None", str, "FinishedImage | None"]


@dataclass
class PipelineResult:
    measurements: pd.DataFrame
    skipped: pd.DataFrame
    edit_metadata: pd.DataFrame
    chunks_for_report: list[ChunkOutput]
    timings: dict[str, float]
    cache_summary: dict[str, dict[str, int]]


class Pipeline:
    """Runs one experiment's image work. See the module docstring."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        editor: Editor,
        strengths: Sequence[float],
        classifiers: dict[str, Classifier],
        runner: BatchRunner,
        cache: WorkCache,
        seed: int,
        keep_for_report: int = 24,
        audit_hook: AuditHook | None = None,
        paired: bool = True,
    ) -> None:
        self.analyzer = analyzer
        self.editor = editor
        self.strengths = [float(s) for s in strengths if s > 0]
        self.classifiers = classifiers
        self.runner = runner
        self.cache = cache
        self.seed = seed
        self.keep_for_report = keep_for_report
        self.audit_hook = audit_hook
        self.paired = paired  # False: originals only (observational mode), no sham and no edits
        self.timings: dict[str, float] = defaultdict(float)
        self._analyzer_fp = stable_hash(analyzer.fingerprint(), 32)
        self._editor_fp = stable_hash(editor.fingerprint(), 32)
        self._clf_fp = {n: stable_hash(c.fingerprint(), 32) for n, c in classifiers.items()}
        self._finished_fp = finished_fingerprint(self._editor_fp, self.strengths, seed, paired, classifiers,
                                                 self._clf_fp, audit_hook)

    # -- stage 1: load and analyse (runs in worker threads) -------------------------------------
    def _decode(self, rec: ImageRecord) -> tuple[np.ndarray | None, FaceAnalysis | None]:
        try:
            return rec.load(), None
        except ImageLoadError as exc:
            return None, FaceAnalysis(rec.image_id, ok=False, reason=f"load: {exc}")
        except Exception as exc:  # noqa: BLE001 - a user's loader must not end the run
            return None, FaceAnalysis(rec.image_id, ok=False, reason=f"load: {type(exc).__name__}: {exc}")

    def _pixels_key(self, rec: ImageRecord) -> tuple[str | None, np.ndarray | None, FaceAnalysis | None]:
        """The hash of the record's decoded pixels, decoding only when the file's bytes are new.

        Keys stay those of the pixels (a re-encoded copy of an image shares its work); the file's
        bytes only index them, so a re-run of a file dataset decodes nothing it already decoded.
        """
        skey = None
        if rec.file is not None and (digest := file_digest(rec.file)) is not None:
            skey = key_of("source", digest, DECODER_VERSION)
            got = self.cache.get_arrays("source", skey)
            if got is not None:
                return str(got["pixels"]), None, None
        rgb, failure = self._decode(rec)
        if rgb is None:
            return None, None, failure
        pixels = pixels_hash(rgb)
        if skey is not None:
            self.cache.put_arrays("source", skey, pixels=np.array(pixels))
        return pixels, rgb, None

    def _load_and_analyse(self, rec: ImageRecord, replay: bool = True) -> Loaded:
        t0 = time.perf_counter()
        pixels, rgb, failure = self._pixels_key(rec)
        if pixels is None:
            assert failure is not None
            return failure, None, "", None
        t1 = time.perf_counter()
        akey = key_of("analysis", pixels, self._analyzer_fp)
        cached = self.cache.get_arrays("analysis", akey)
        if cached is not None:
            if not bool(cached["ok"]):
                self.cache.count("analysis", hit=True)
                return FaceAnalysis(rec.image_id, ok=False, reason=str(cached["reason"])), None, akey, None
            fa = FaceAnalysis(
                rec.image_id, ok=True, reason=str(cached["reason"]), landmarks=cached["landmarks"],
                blendshapes=cached["blendshapes"], box=cached["box"], pose=cached["pose"],
                crop_from_source=cached["crop_from_source"],
            )
            finished = self._get_finished(akey, rec) if replay else None
            crop = None if finished is not None else self.cache.get_image("crop", akey)
            if finished is not None or crop is not None:
                self.cache.count("analysis", hit=True)
                self._time("load", t1 - t0)
                return fa, crop, akey, finished
        if rgb is None:
            rgb, failure = self._decode(rec)
            if rgb is None:
                assert failure is not None
                return failure, None, "", None
        fa, crop = self.analyzer.analyse(rec.image_id, rgb)
        self.cache.count("analysis", hit=False)
        if fa.ok:
            assert crop is not None
            self.cache.put_image("crop", akey, crop)  # image first: the array entry marks it complete
            self.cache.put_arrays(
                "analysis", akey, ok=np.array(True), reason=np.array(fa.reason), landmarks=fa.landmarks,
                blendshapes=fa.blendshapes, box=fa.box, pose=fa.pose, crop_from_source=fa.crop_from_source,
            )
        else:
            self.cache.put_arrays("analysis", akey, ok=np.array(False), reason=np.array(fa.reason))
        self._time("load", t1 - t0)
        self._time("landmarks", time.perf_counter() - t1)
        return fa, crop, akey, None

    # -- finished images -------------------------------------------------------------------------
    def _finished_key(self, akey: str, rec: ImageRecord) -> str | None:
        if self._finished_fp is None:
            return None
        return key_of("finished", akey, self._finished_fp, record_tag(rec))

    def _edit_key(self, akey: str, rec: ImageRecord, strength: float) -> str:
        # Editors draw per-image noise seeded by the image id and may read the record's metadata
        # (a per-face gender target), so both are part of an edit's identity, beside its pixels.
        return key_of("edit", akey, self._editor_fp, strength, self.seed, record_tag(rec))

    def _get_finished(self, akey: str, rec: ImageRecord) -> FinishedImage | None:
        key = self._finished_key(akey, rec)
        got = self.cache.get_arrays("finished", key) if key is not None else None
        return FinishedImage.from_arrays(got) if got is not None else None

    def _put_finished(self, chunk: ChunkOutput) -> None:
        for i, (rec, akey) in enumerate(zip(chunk.records, chunk.keys, strict=True)):
            key = self._finished_key(akey, rec)
            if key is None:
                return
            entry = FinishedImage(
                conditions=[
                    {"name": c.name, "strength": c.strength, "hash": c.hashes[i],
                     "meta": c.metadata[i] if c.metadata else None}
                    for c in chunk.conditions
                ],
                predictions={k: v[i] for k, v in chunk.predictions.items()},
                audit_rows=[r for r in chunk.audit_rows if r.get("image_id") == rec.image_id],
            )
            self.cache.put_arrays("finished", key, **entry.to_arrays())
            self.cache.count("finished", hit=False)

    def _replay(self, items: list[tuple[ImageRecord, FaceAnalysis, str, FinishedImage]]) -> ChunkOutput:
        """A chunk rebuilt from finished entries: no image is opened, no number recomputed."""
        done = [f for *_, f in items]
        conditions = [
            Condition(c["name"], float(c["strength"]), None, [f.conditions[j]["hash"] for f in done],
                      [f.conditions[j]["meta"] for f in done] if c["meta"] is not None else [])
            for j, c in enumerate(done[0].conditions)
        ]
        predictions = {k: np.stack([f.predictions[k] for f in done]) for k in done[0].predictions}
        n_edits = sum(c.name != "original" for c in conditions)
        self.cache.count("finished", hit=True, n=len(items))
        self.cache.count("edit", hit=True, n=n_edits * len(items))
        self.cache.count("pred", hit=True, n=len(predictions) * len(items))
        return ChunkOutput([r for r, *_ in items], [a for _, a, *_ in items], None, conditions, predictions,
                           [row for f in done for row in f.audit_rows], keys=[k for _, _, k, _ in items])

    def _for_report(self, records: list[ImageRecord], fresh: ChunkOutput | None, replayed: ChunkOutput | None,
                    n: int, pool: ThreadPoolExecutor) -> tuple[ChunkOutput | None, bool]:
        """(The chunk's first `n` faces in dataset order with pixels, or None if it has no face;
        whether every cached pixel they need was found).

        Replayed faces get their crops and edited images from the cache; only these few are opened.
        """
        position = {id(r): i for i, r in enumerate(records)}
        firsts = set(sorted(position[id(r)] for p in (fresh, replayed) if p is not None for r in p.records)[:n])
        parts = []
        for part in (fresh, replayed):
            if part is None:
                continue
            part = select(part, [i for i, r in enumerate(part.records) if position[id(r)] in firsts])
            if not part.records:
                continue
            if part.conditions[0].images is None and not self._attach_images(part, pool):
                return None, False
            parts.append(part)
        return (in_record_order(parts, records) if parts else None), True

    def _attach_images(self, chunk: ChunkOutput, pool: ThreadPoolExecutor) -> bool:
        """Load a replayed chunk's crops and edited images from the cache (decoded in `pool`)."""
        for cond in chunk.conditions:
            if cond.name == "original":
                wanted = [("crop", a) for a in chunk.keys]
            else:
                wanted = [("edit", self._edit_key(a, r, cond.strength)) for a, r in zip(chunk.keys, chunk.records)]
            images = list(pool.map(lambda kind_key: self.cache.get_image(*kind_key), wanted))
            if any(im is None for im in images):
                return False
            cond.images = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
                           if images else torch.zeros((0, 3, 1, 1), dtype=torch.uint8))
        return True

    def _time(self, stage: str, seconds: float) -> None:
        self.timings[stage] += seconds

    # -- stage 2: edit ---------------------------------------------------------------------------
    def _edit_condition(self, batch: FaceBatch, akeys: list[str], recs: list[ImageRecord], strength: float) -> Condition:
        """Edited images for every face, from the cache where possible, computing only the rest."""
        keys = [self._edit_key(a, r, strength) for a, r in zip(akeys, recs)]
        images: list[np.ndarray | None] = [self.cache.get_image("edit", k) for k in keys]
        metas: list[dict[str, Any] | None] = []
        masks: list[np.ndarray | None] = []
        for k, img in zip(keys, images):
            m = self.cache.get_arrays("editmeta", k) if img is not None else None
            metas.append(_meta_from_arrays(m) if m is not None else None)
            masks.append(m["mask"] if m is not None else None)
        todo = [i for i, (im, me) in enumerate(zip(images, metas)) if im is None or me is None]
        self.cache.count("edit", hit=True, n=len(keys) - len(todo))
        if todo:
            t0 = time.perf_counter()
            sub = batch.select(todo)
            res = self.editor.sham(sub, self.seed) if strength == 0 else self.editor.edit(sub, strength, self.seed)
            out = to_uint8(res.images)
            self._time("edit", time.perf_counter() - t0)
            # Masks are stored at 8 bits: enough to tell inside from outside, small on disk.
            mask_u8 = res.mask.detach().clamp(0, 1).mul(255).round().to(torch.uint8)[:, 0].cpu().numpy()
            for j, i in enumerate(todo):
                images[i] = out[j]
                # Through JSON, as the cache stores it: a fresh run and a re-run report identical values.
                meta = _meta_from_arrays(_meta_to_arrays(dict(res.metadata[j]) if res.metadata else {}))
                metas[i] = meta
                masks[i] = mask_u8[j]
                self.cache.put_image("edit", keys[i], out[j])
                self.cache.put_arrays("editmeta", keys[i], mask=mask_u8[j], **_meta_to_arrays(meta))
            self.cache.count("edit", hit=False, n=len(todo))
        stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(batch.device)
        mask = torch.from_numpy(np.stack(masks)).to(batch.device).float().div_(255.0).unsqueeze(1)
        name = "sham" if strength == 0 else "edit"
        return Condition(name, strength, stacked, [pixels_hash(im) for im in images], metas, mask)  # type: ignore[misc]

    # -- stage 3: classify -----------------------------------------------------------------------
    def _classify(self, cond: Condition, boxes: torch.Tensor) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        box_np = boxes.cpu().numpy()
        for name, clf in self.classifiers.items():
            keys = [key_of("pred", h, self._clf_fp[name], b.round(3).tolist()) for h, b in zip(cond.hashes, box_np)]
            rows: list[np.ndarray | None] = []
            for k in keys:
                got = self.cache.get_arrays("pred", k)
                rows.append(None if got is None else got["p"])
            todo = [i for i, r in enumerate(rows) if r is None]
            self.cache.count("pred", hit=True, n=len(keys) - len(todo))
            if todo:
                t0 = time.perf_counter()
                idx = torch.as_tensor(todo, device=cond.images.device)
                probs = self.runner.predict(clf, cond.images.index_select(0, idx), boxes.index_select(0, idx))
                self._time("classify", time.perf_counter() - t0)
                for j, i in enumerate(todo):
                    rows[i] = probs[j]
                    self.cache.put_arrays("pred", keys[i], p=probs[j])
                self.cache.count("pred", hit=False, n=len(todo))
            out[name] = np.stack(rows)  # type: ignore[arg-type]
        return out

    # -- the chunk loop --------------------------------------------------------------------------
    def run(self, records: Sequence[ImageRecord]) -> PipelineResult:
        size = self.runner.chunk_size
        chunks = [list(records[i : i + size]) for i in range(0, len(records), size)]
        frames: list[pd.DataFrame] = []
        skipped: list[dict[str, Any]] = []
        edit_meta: list[dict[str, Any]] = []
        kept: list[ChunkOutput] = []
        n_kept = 0
        workers = max(1, self.runner.workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyse") as pool:
            pending: list[Future] | None = [pool.submit(self._load_and_analyse, r) for r in chunks[0]] if chunks else None
            for ci in self.runner.progress(range(len(chunks)), total=len(chunks), desc="chunks"):
                results: list[Loaded] = [f.result() for f in pending or []]
                # Prefetch: the next chunk decodes and analyses while this one is edited and classified.
                pending = [pool.submit(self._load_and_analyse, r) for r in chunks[ci + 1]] if ci + 1 < len(chunks) else None
                fresh, replayed = self._process_chunk(chunks[ci], results, skipped)
                shown = None
                if n_kept < self.keep_for_report:
                    shown, complete = self._for_report(chunks[ci], fresh, replayed, self.keep_for_report - n_kept, pool)
                    if not complete:
                        # Cached pixels the report needs are gone: compute this chunk's images again.
                        again = [self._load_and_analyse(r, replay=False) if x[3] is not None else x
                                 for r, x in zip(chunks[ci], results)]
                        fresh, replayed = self._process_chunk(chunks[ci], again, [])
                        shown, _ = self._for_report(chunks[ci], fresh, replayed, self.keep_for_report - n_kept, pool)
                for part in (fresh, replayed):
                    if part is not None:
                        frames.append(tidy_rows(part, self.classifiers, self.editor))
                        edit_meta.extend(edit_rows(part))
                if replayed is not None and self.audit_hook is not None:
                    self.audit_hook.restore(replayed.audit_rows)
                if fresh is not None:
                    if self.audit_hook is not None:
                        t0 = time.perf_counter()
                        fresh.audit_rows = list(self.audit_hook.observe(fresh) or [])
                        self._time("audit", time.perf_counter() - t0)
                    self._put_finished(fresh)
                if shown is not None:
                    kept.append(shown)
                    n_kept += len(shown.records)
        measurements = pd.concat(frames, ignore_index=True) if frames else empty_measurements()
        return PipelineResult(
            measurements=measurements,
            skipped=pd.DataFrame(skipped, columns=["image_id", "source", "stage", "reason"]),
            edit_metadata=pd.DataFrame(edit_meta),
            chunks_for_report=kept,
            timings=dict(self.timings),
            cache_summary=self.cache.summary(),
        )

    def _process_chunk(
        self, recs: list[ImageRecord], results: list[Loaded], skipped: list[dict[str, Any]]
    ) -> tuple[ChunkOutput | None, ChunkOutput | None]:
        """(images computed now through the step caches, images replayed from finished entries)."""
        ok_recs, analyses, crops, akeys = [], [], [], []
        finished: list[tuple[ImageRecord, FaceAnalysis, str, FinishedImage]] = []
        for rec, (fa, crop, akey, done) in zip(recs, results):
            if not fa.ok:
                stage = "load" if fa.reason.startswith("load:") else "face"
                reason = fa.reason.removeprefix("load: ")
                skipped.append({"image_id": rec.image_id, "source": rec.source, "stage": stage, "reason": reason})
                log.info("skipped image=%s stage=%s reason=%s", rec.image_id, stage, reason)
            elif crop is None:
                assert done is not None
                finished.append((rec, fa, akey, done))
            else:
                ok_recs.append(rec)
                analyses.append(fa)
                crops.append(crop)
                akeys.append(akey)
        replayed = self._replay(finished) if finished else None
        if not ok_recs:
            return None, replayed
        batch = make_face_batch(ok_recs, analyses, crops, self.runner.device)
        orig = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous().to(batch.device)
        conditions = [Condition("original", float("nan"), orig, [pixels_hash(c) for c in crops])]
        if self.paired:
            conditions.append(self._edit_condition(batch, akeys, ok_recs, 0.0))
            for s in self.strengths:
                conditions.append(self._edit_condition(batch, akeys, ok_recs, s))
        predictions: dict[tuple[str, str], np.ndarray] = {}
        for cond in conditions:
            for name, probs in self._classify(cond, batch.boxes).items():
                predictions[(name, cond.label)] = probs
        return ChunkOutput(ok_recs, analyses, batch, conditions, predictions, keys=akeys), replayed

def _meta_to_arrays(meta: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"json": to_json_array(meta)}


def _meta_from_arrays(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return from_json_array(arrays["json"])


