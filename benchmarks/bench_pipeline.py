"""Benchmark the pipeline: each stage's throughput alone, and the overlapped pipeline end to end.

Both are measured in this one process, on the same images, with the same threads and after the same
warm-up (one chunk through every stage, so model loading is paid before any clock starts), each on a
fresh work cache so every step computes:

* stages alone: every chunk through load (decode and analyse), then every chunk through edit, then
  classify, then audit and record, each stage timed on its own -- once with the torch threads each
  stage gets in the overlapped pipeline (`runner.stage_threads`, by default half the CPUs), and once
  with all of them (`--threads`);
* in turn: one chunk through every stage, then the next (`runner.overlap=false`, all threads);
* end to end: the stages in their threads, overlapping on different chunks (the default).

Target: end-to-end throughput >= 0.8 of the slowest stage's throughput alone with the threads it has
in the pipeline (`--check` exits 1 otherwise): the overlap loses little to its slowest stage. The
all-threads numbers show what the overlap buys over running the stages in turn on the same machine;
where every stage already keeps every core busy (a small CPU), that is little. Images per second count
the images that reached the stage (faces for edit and later).

    python benchmarks/bench_pipeline.py [--experiment age_shift] [--limit 102] [--chunk-size 16]
        [--threads 2] [--check] [override ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.app import _audit_hook  # noqa: E402
from engine.cache import WorkCache  # noqa: E402
from engine.config import compose_config  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from engine.spec import RunSpec  # noqa: E402

TARGET = 0.8


def build(spec: RunSpec, cache: WorkCache, overlap: bool) -> Pipeline:
    classifiers = {n: spec.runner.prepare(c) for n, c in spec.classifiers.items()}
    return Pipeline(spec.faces, spec.editor, spec.strengths, classifiers, spec.runner, cache, spec.seed,
                    audit=_audit_hook(spec, cache, spec.runner.device), paired=spec.paired, overlap=overlap)


def stages_alone(pipe: Pipeline, parts: list, threads: int) -> tuple[dict[str, float], int, int]:
    """Seconds of each stage over every chunk, one stage after the other; (times, images, faces)."""

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _stages_alone(pipe, parts)
    finally:
        torch.set_num_threads(saved)


def _stages_alone(pipe: Pipeline, parts: list) -> tuple[dict[str, float], int, int]:
    from concurrent.futures import ThreadPoolExecutor

    times = {}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, pipe.runner.workers)) as pool:
        chunks = [pipe._load_chunk(i, part, pool) for i, part in enumerate(parts)]
    times["load+analyse"] = time.perf_counter() - t0
    for name, fn in (("edit", pipe._edit_chunk), ("classify", pipe._classify_chunk),
                     ("audit+record", lambda c: pipe._record_chunk(pipe._audit_chunk(c)))):
        t0 = time.perf_counter()
        chunks = [fn(c) for c in chunks]
        times[name] = time.perf_counter() - t0
    n_faces = sum(len(c.results) for c in chunks)
    return times, sum(len(p) for p in parts), n_faces


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="age_shift")
    p.add_argument("--limit", type=int, default=None, help="images of the demo set (default: all)")
    p.add_argument("--chunk-size", type=int, default=None, help="runner.chunk_size (default: the config's)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--check", action="store_true", help=f"exit 1 unless end to end >= {TARGET} x the slowest stage")
    args, overrides = p.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    overrides = [f"experiment={args.experiment}", "runner.progress=off", *overrides]
    if args.limit:
        overrides.append(f"dataset.limit={args.limit}")
    if args.chunk_size:
        overrides.append(f"runner.chunk_size={args.chunk_size}")
    spec = RunSpec.from_config(compose_config(overrides))
    records = list(spec.dataset)
    size = spec.runner.chunk_size
    parts = [records[i: i + size] for i in range(0, len(records), size)]
    stage_threads = spec.runner.stage_threads
    print(f"# bench_pipeline: experiment={args.experiment} images={len(records)} chunk_size={size} "
          f"threads={args.threads} stage_threads={stage_threads} workers={spec.runner.workers} "
          f"device={spec.runner.device}")
    print("# each measurement: same process, same threads, after one warm-up chunk through every stage, "
          "on a fresh work cache")
    with tempfile.TemporaryDirectory(prefix="facecf-bench-") as tmp:
        build(spec, WorkCache(Path(tmp) / "warm"), overlap=False).run(parts[0])  # loads every model once
        times, n_images, n_faces = stages_alone(build(spec, WorkCache(Path(tmp) / "alone"), False), parts,
                                                stage_threads)
        all_times, _, _ = stages_alone(build(spec, WorkCache(Path(tmp) / "alone-all"), False), parts, args.threads)
        t0 = time.perf_counter()
        build(spec, WorkCache(Path(tmp) / "turn"), overlap=False).run(records)
        in_turn = time.perf_counter() - t0
        t0 = time.perf_counter()
        build(spec, WorkCache(Path(tmp) / "overlap"), overlap=True).run(records)
        overlapped = time.perf_counter() - t0
    spec.faces.close()
    def rates(t: dict[str, float]) -> dict[str, float]:
        return {k: (n_images if k == "load+analyse" else n_faces) / v for k, v in t.items()}

    alone, alone_all = rates(times), rates(all_times)
    slowest = min(alone, key=alone.get)
    end_to_end = n_images / overlapped
    print(f"\n{'':>14} {'stage threads (' + str(stage_threads) + ')':>20} {'all threads (' + str(args.threads) + ')':>20}")
    print(f"{'stage':>14} {'seconds':>9} {'img/s':>10} {'seconds':>9} {'img/s':>10}")
    for k in times:
        print(f"{k:>14} {times[k]:9.2f} {alone[k]:10.2f} {all_times[k]:9.2f} {alone_all[k]:10.2f}"
              f"{'  <- slowest' if k == slowest else ''}")
    print(f"{'sum of stages':>14} {sum(times.values()):9.2f} {n_images / sum(times.values()):10.2f} "
          f"{sum(all_times.values()):9.2f} {n_images / sum(all_times.values()):10.2f}")
    print(f"{'in turn':>14} {'':>20} {in_turn:9.2f} {n_images / in_turn:10.2f}")
    print(f"{'end to end':>14} {overlapped:9.2f} {end_to_end:10.2f}")
    ratio = end_to_end / alone[slowest]
    print(f"\nend to end / slowest stage alone with its pipeline threads ({slowest}): {ratio:.2f} "
          f"(target >= {TARGET})")
    print(f"end to end / slowest stage alone with all threads: {end_to_end / min(alone_all.values()):.2f}")
    print(f"end to end vs in turn (all threads): {in_turn / overlapped:.2f}x faster")
    if args.check and ratio < TARGET:
        print(f"FAIL: {ratio:.2f} < {TARGET}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
