"""One experiment's image work: load -> analyse -> edit -> classify -> audit -> record.

The dataset streams through in chunks. Each stage is a cached step (`engine.pipeline.steps`): it
looks up its output by key or computes it. The record of a finished image is the last step's
output, and its key is known once the face is analysed, so the pipeline looks it up right there: an
image with a record is done, and the later stages have nothing to do for it. A re-run is therefore
the same path as a first run, with cache hits; nothing is recomputed to show results.

Stages overlap: a load thread (with a pool of worker threads that decode and analyse images), an
edit thread, a classify thread and an audit thread pass chunks down bounded queues, each stage
taking chunks in dataset order, so results are deterministic while stage k works on chunk i and
stage k+1 on chunk i-1. The report runs after the run and reads the gallery's images from the
work cache by the keys the records hold.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from engine.cache import WorkCache, pixels_hash
from engine.data import ImageRecord
from engine.pipeline.batch import make_face_batch
from engine.pipeline.record import (
    ConditionResult,
    ImageResult,
    finished_fingerprint,
    record_key,
    record_tag,
)
from engine.pipeline.runner import BatchRunner
from engine.pipeline.steps import AnalyseStep, ClassifyStep, EditStep, LoadStep, StageClock
from engine.pipeline.tables import SkippedImage
from engine.types import Classifier, Editor, FaceAnalysis, FaceBatch, stable_hash

log = logging.getLogger(__name__)

STAGES = ("load", "edit", "classify", "audit")


@dataclass
class Condition:
    """One version of a chunk's computed faces: the original, the sham, or an edit at a strength."""

    name: str  # "original" | "sham" | "edit"
    strength: float  # NaN for the original
    images: torch.Tensor  # (N, 3, H, W) uint8 on the runner's device
    hashes: list[str]
    image_kind: str  # where the images are cached: "crop" or "edit"
    image_keys: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)
    mask: torch.Tensor | None = None  # (N, 1, H, W) float, the edit mask

    @property
    def label(self) -> str:
        return self.name if self.name != "edit" else f"edit@{self.strength:g}"


@dataclass
class LoadedImage:
    """A record after the load and analyse steps: skipped, finished (its record), or to compute."""

    record: ImageRecord
    analysis: FaceAnalysis | None = None
    analysis_key: str = ""
    crop: np.ndarray | None = None
    finished: ImageResult | None = None
    skipped: SkippedImage | None = None


@dataclass
class Chunk:
    """A chunk as it moves down the stages; `fresh` are the positions computed in this run."""

    index: int
    images: list[LoadedImage]
    fresh: list[int] = field(default_factory=list)
    batch: FaceBatch | None = None
    conditions: list[Condition] = field(default_factory=list)
    predictions: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    results: list[ImageResult] = field(default_factory=list)

    @property
    def fresh_records(self) -> list[ImageRecord]:
        return [self.images[i].record for i in self.fresh]


class AuditHook(Protocol):
    """The audit stage as the pipeline sees it: rows per computed chunk, and what they depend on."""

    def fingerprint(self) -> Any: ...

    def observe(self, chunk: Chunk) -> list[dict[str, Any]]: ...


@dataclass
class PipelineResult:
    results: list[ImageResult]  # every analysed image, in dataset order
    skipped: list[SkippedImage]
    timings: dict[str, float]
    cache_summary: dict[str, dict[str, int]]


class Pipeline:
    """Runs one experiment's image work. See the module docstring.

    Args:
        analyzer: the face analyser (`engine.faces`).
        editor: the editor; its sham and one edit per strength > 0 are made for every face.
        strengths: edit strengths (0, the sham, is always made when `paired`).
        classifiers: name -> classifier (already moved to the runner's device).
        runner: batches classifier calls.
        cache: the work cache.
        seed: the run's seed (editors derive per-image seeds from it).
        audit: the audit hook, or None.
        paired: False for the observational mode: originals only, no sham and no edits.
        overlap: run the stages in threads that overlap on different chunks.
    """

    def __init__(self, analyzer: Any, editor: Editor, strengths: Sequence[float], classifiers: dict[str, Classifier],
                 runner: BatchRunner, cache: WorkCache, seed: int, audit: AuditHook | None = None,
                 paired: bool = True, overlap: bool = True) -> None:
        self.editor = editor
        self.strengths = [float(s) for s in strengths if s > 0]
        self.classifiers = classifiers
        self.runner = runner
        self.cache = cache
        self.audit = audit
        self.paired = paired
        self.overlap = overlap
        self.clock = StageClock()
        self.loader = LoadStep(cache)
        self.analyse = AnalyseStep(cache, analyzer, stable_hash(analyzer.fingerprint(), 32))
        editor_fp = stable_hash(editor.fingerprint(), 32)
        self.edit = EditStep(cache, editor, editor_fp, seed, getattr(runner, "backoff", None))
        clf_fps = {n: stable_hash(c.fingerprint(), 32) for n, c in classifiers.items()}
        self.classify = {n: ClassifyStep(cache, runner, c, clf_fps[n]) for n, c in classifiers.items()}
        self.record_fp = finished_fingerprint(editor_fp, self.strengths, seed, paired, classifiers, clf_fps,
                                              audit.fingerprint() if audit is not None else None)

    # -- load and analyse (one record; runs in the worker pool) -----------------------------------
    def _load_one(self, rec: ImageRecord) -> list[LoadedImage]:
        """The record's faces: each finished (its record), to compute (with its crop), or skipped."""
        pixels, rgb, failure = self.loader.pixels(rec)
        if pixels is None:
            return [LoadedImage(rec, skipped=SkippedImage(rec.image_id, rec.source, "load", failure))]
        akey = self.analyse.key(pixels)
        faces = self.analyse.faces(akey, rec.image_id)
        if faces is not None:
            loaded = [self._cached_face(rec, fkey, fa) for fkey, fa in faces]
            if all(im is not None for im in loaded):
                self.cache.count("analysis", hit=True)
                return loaded  # type: ignore[return-value]
            # A face's crop is gone from the cache: analyse the image again.
        if rgb is None:
            rgb, failure = self.loader.decode(rec)
            if rgb is None:
                return [LoadedImage(rec, skipped=SkippedImage(rec.image_id, rec.source, "load", failure))]
        return [self._face(rec, fkey, fa, crop) for fkey, fa, crop in self.analyse.compute(akey, rec.image_id, rgb)]

    def _face_record(self, rec: ImageRecord, fa: FaceAnalysis) -> ImageRecord:
        """The record of one face: the image's own, or `<id>#<k>` for a face of a multi-face image."""
        if fa.image_id == rec.image_id:
            return rec
        k = int(fa.image_id.rsplit("#", 1)[1])
        return dataclasses.replace(rec, image_id=fa.image_id, metadata={**rec.metadata, "source_image": rec.image_id,
                                                                       "face": k})

    def _face(self, rec: ImageRecord, fkey: str, fa: FaceAnalysis, crop: np.ndarray | None) -> LoadedImage:
        face = self._face_record(rec, fa)
        if not fa.ok:
            return LoadedImage(face, fa, fkey, skipped=SkippedImage(face.image_id, rec.source, "face", fa.reason))
        return LoadedImage(face, fa, fkey, crop=crop)

    def _cached_face(self, rec: ImageRecord, fkey: str, fa: FaceAnalysis) -> LoadedImage | None:
        """A face whose analysis is cached: its record if it has one, else its crop; None if the crop is gone."""
        face = self._face_record(rec, fa)
        if not fa.ok:
            return self._face(rec, fkey, fa, None)
        got = self.cache.get_arrays("finished", record_key(fkey, self.record_fp, face))
        finished = ImageResult.from_arrays(face, fkey, got) if got is not None else None
        if finished is not None:
            return LoadedImage(face, fa, fkey, finished=finished)
        crop = self.cache.get_image("crop", fkey)
        return None if crop is None else LoadedImage(face, fa, fkey, crop=crop)

    def _load_chunk(self, index: int, records: Sequence[ImageRecord], pool: ThreadPoolExecutor) -> Chunk:
        images = [face for faces in pool.map(self._load_one, records) for face in faces]
        for im in images:
            if im.skipped is not None:
                log.info("skipped image=%s stage=%s reason=%s", im.record.image_id, im.skipped.stage,
                         im.skipped.reason)
        fresh = [i for i, im in enumerate(images) if im.crop is not None]
        return Chunk(index, images, fresh)

    # -- edit --------------------------------------------------------------------------------------
    def _edit_chunk(self, chunk: Chunk) -> Chunk:
        if not chunk.fresh:
            return chunk
        items = [chunk.images[i] for i in chunk.fresh]
        crops = [im.crop for im in items]
        batch = make_face_batch([im.record for im in items], [im.analysis for im in items], crops,  # type: ignore[misc]
                                self.runner.device)
        orig = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous().to(batch.device)  # type: ignore[arg-type]
        akeys = [im.analysis_key for im in items]
        chunk.batch = batch
        original = Condition("original", float("nan"), orig, [pixels_hash(c) for c in crops], "crop", akeys)  # type: ignore[arg-type]
        chunk.conditions = [original]
        if self.paired:
            tags = [record_tag(im.record) for im in items]
            strengths = self.strengths
            if self.editor.sham_is_input:
                # The editor's pipeline at 0 gives back its input: the sham is the original, pixels,
                # cache entry and all (nothing to compute or store; the editor contract test holds it).
                sham_meta = [{"strength": 0.0, "sham": "input"} for _ in items]
                chunk.conditions.append(Condition("sham", 0.0, orig, original.hashes, "crop", akeys, sham_meta,
                                                  torch.zeros_like(batch.images[:, :1])))
            else:
                strengths = [0.0, *strengths]
            for strength in strengths:
                keys = [self.edit.key(a, t, strength) for a, t in zip(akeys, tags)]
                done = self.edit.run(batch, keys, strength)
                images = torch.from_numpy(np.stack([d[0] for d in done])).permute(0, 3, 1, 2).contiguous()
                mask = torch.from_numpy(np.stack([d[1] for d in done])).float().div_(255.0).unsqueeze(1)
                chunk.conditions.append(Condition(
                    "sham" if strength == 0 else "edit", strength, images.to(batch.device),
                    [pixels_hash(d[0]) for d in done], "edit", keys, [d[2] for d in done], mask.to(batch.device)))
        return chunk

    # -- classify ------------------------------------------------------------------------------------
    def _classify_chunk(self, chunk: Chunk) -> Chunk:
        if not chunk.fresh:
            return chunk
        assert chunk.batch is not None
        for cond in chunk.conditions:
            for name, step in self.classify.items():
                chunk.predictions[(name, cond.label)] = step.run(cond.images, cond.hashes, chunk.batch.boxes)
        return chunk

    # -- audit and record ------------------------------------------------------------------------------
    def _audit_chunk(self, chunk: Chunk) -> Chunk:
        if chunk.fresh and self.audit is not None:
            chunk.audit_rows = list(self.audit.observe(chunk) or [])
        return chunk

    def _record_chunk(self, chunk: Chunk) -> Chunk:
        position = {i: j for j, i in enumerate(chunk.fresh)}
        rows_by_id: dict[str, list[dict[str, Any]]] = {}
        for row in chunk.audit_rows:
            rows_by_id.setdefault(row["image_id"], []).append(row)
        for i, im in enumerate(chunk.images):
            if im.finished is not None:
                chunk.results.append(im.finished)
                n_pred = len(im.finished.predictions)
                self.cache.count("finished", hit=True)
                self.cache.count("edit", hit=True, n=sum(c.image_kind == "edit" for c in im.finished.conditions))
                self.cache.count("pred", hit=True, n=n_pred)
                continue
            if i not in position:
                continue
            j = position[i]
            result = ImageResult(
                im.record, im.analysis_key,
                tuple(ConditionResult(c.name, c.strength, c.hashes[j], c.image_kind, c.image_keys[j],
                                      c.metadata[j] if c.metadata else None) for c in chunk.conditions),
                {k: v[j] for k, v in chunk.predictions.items()},
                tuple(rows_by_id.get(im.record.image_id, [])),
            )
            self.cache.put_arrays("finished", record_key(im.analysis_key, self.record_fp, im.record),
                                  **result.to_arrays())
            self.cache.count("finished", hit=False)
            chunk.results.append(result)
        # The pixels are in the work cache; nothing downstream holds on to them.
        chunk.batch, chunk.conditions = None, []
        return chunk

    # -- the run -------------------------------------------------------------------------------------
    def _stages(self) -> list[tuple[str, Callable[[Chunk], Chunk]]]:
        return [("edit", self._edit_chunk), ("classify", self._classify_chunk),
                ("audit", lambda c: self._record_chunk(self._audit_chunk(c)))]

    def run(self, records: Sequence[ImageRecord]) -> PipelineResult:
        size = self.runner.chunk_size
        parts = [list(records[i: i + size]) for i in range(0, len(records), size)]
        t0 = time.perf_counter()
        chunks = self._run_overlapped(parts) if self.overlap else self._run_in_turn(parts)
        done = list(self.runner.progress(chunks, total=len(parts), desc="chunks"))
        timings = {stage: self.clock.seconds.get(stage, 0.0) for stage in STAGES}
        timings["pipeline"] = time.perf_counter() - t0
        return PipelineResult(
            results=[r for c in done for r in c.results],
            skipped=[im.skipped for c in done for im in c.images if im.skipped is not None],
            timings=timings,
            cache_summary=self.cache.summary(),
        )

    def _timed(self, stage: str, fn: Callable[[Chunk], Chunk], chunk: Chunk) -> Chunk:
        t0 = time.perf_counter()
        try:
            return fn(chunk)
        finally:
            self.clock.add(stage, time.perf_counter() - t0)

    def _loaded(self, index: int, part: list[ImageRecord], pool: ThreadPoolExecutor) -> Chunk:
        t0 = time.perf_counter()
        try:
            return self._load_chunk(index, part, pool)
        finally:
            self.clock.add("load", time.perf_counter() - t0)

    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=max(1, self.runner.workers), thread_name_prefix="analyse")

    def _run_in_turn(self, parts: list[list[ImageRecord]]) -> Iterator[Chunk]:
        with self._pool() as pool:
            for i, part in enumerate(parts):
                chunk = self._loaded(i, part, pool)
                for stage, fn in self._stages():
                    chunk = self._timed(stage, fn, chunk)
                yield chunk

    def _run_overlapped(self, parts: list[list[ImageRecord]]) -> Iterator[Chunk]:
        """Each stage in its own thread, chunks passed down bounded queues (one chunk of slack)."""
        stop = threading.Event()
        errors: list[BaseException] = []
        end = object()
        queues: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(len(self._stages()) + 1)]

        def put(q: queue.Queue, item: Any) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def source() -> None:
            try:
                with self._pool() as pool:
                    for i, part in enumerate(parts):
                        if stop.is_set():
                            return
                        put(queues[0], self._loaded(i, part, pool))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                errors.append(exc)
                stop.set()
            finally:
                put(queues[0], end)

        def worker(k: int, stage: str, fn: Callable[[Chunk], Chunk]) -> None:
            # Per thread: each stage computes on its own share of the cores (see BatchRunner).
            torch.set_num_threads(self.runner.stage_threads)
            try:
                while not stop.is_set():
                    try:
                        item = queues[k].get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if item is end:
                        break
                    put(queues[k + 1], self._timed(stage, fn, item))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                stop.set()
            finally:
                put(queues[k + 1], end)

        threads = [threading.Thread(target=source, name="stage-load", daemon=True)]
        threads += [threading.Thread(target=worker, args=(k, stage, fn), name=f"stage-{stage}", daemon=True)
                    for k, (stage, fn) in enumerate(self._stages())]
        for t in threads:
            t.start()
        try:
            while True:
                try:
                    item = queues[-1].get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set() and not any(t.is_alive() for t in threads):
                        break
                    continue
                if item is end:
                    break
                yield item
        finally:
            stop.set()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
