"""The pipeline: load -> analyse -> edit -> classify -> audit -> record, each a cached step.

* `pipeline`: the stages and how they overlap on chunks (`Pipeline`, `Chunk`, `PipelineResult`);
* `steps`: the cached steps (look up by key or compute);
* `record`: one image's finished work (`ImageResult`), the last step's output;
* `tables`: the run's tables, built from the records;
* `batch`: `FaceBatch` building (and `analyse_faces` for scripts and tests);
* `runner`: batched classifier calls (device, AMP, CUDA out-of-memory back-off);
* `hooks`: what the audit stage does with a chunk.
"""

from engine.pipeline.batch import analyse_faces, make_face_batch
from engine.pipeline.pipeline import Chunk, Condition, Pipeline, PipelineResult
from engine.pipeline.record import ImageResult
from engine.pipeline.runner import BatchRunner

__all__ = ["BatchRunner", "Chunk", "Condition", "ImageResult", "Pipeline", "PipelineResult", "analyse_faces",
           "make_face_batch"]
