"""The CUDA checks of the classifier runner (`bench_runner.py --gpu-check`, run by gpu_check.sh)."""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from runner_data import demo_crops

from classifiers.fer_minixception import FerMiniXception
from classifiers.pyemotion import PyEmotionNetV2
from engine.pipeline import BatchRunner


class HungryClassifier(torch.nn.Module):
    """A fake classifier whose activations take ~270 MB per image: a huge batch must hit CUDA OOM."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 256, 3, padding=1)
        self.head = torch.nn.Linear(256, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu_(self.conv(x)).mean(dim=(2, 3)))


def hungry_classifier(batch_size: int):
    from classifiers.torch_model import TorchClassifier

    return TorchClassifier(
        labels="fer2013",
        preprocessing={"crop": "full", "size": 512, "colour": "rgb"},
        model=HungryClassifier(),
        name="hungry",
        batch_size=batch_size,
    )


def gpu_check(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("FAIL: no CUDA device")
        return 1
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    images, boxes = demo_crops(args.crops, None)  # the aligned crops: what the pipeline feeds
    failures = []
    cpu = BatchRunner(device="cpu", progress="off")
    fp32 = BatchRunner(device="cuda", amp="off", progress="off")
    bf16 = BatchRunner(device="cuda", amp="bf16", progress="off")

    print("\n## CUDA vs CPU on the demo crops (max |difference| of outputs, top-1 agreement)")
    from classifiers.preprocess import Preprocessing

    for make in (FerMiniXception, PyEmotionNetV2):
        # CUDA resizes with the batched matmul route; on the CPU, uint8 crops take the per-image
        # uint8 kernel, which rounds resized pixels to grey levels. Compare like with like first.
        Preprocessing.resize_route = "matmul"
        ref = cpu.predict(cpu.prepare(make(fidelity="engine")), images, boxes)
        Preprocessing.resize_route = None
        uint8_route = cpu.predict(cpu.prepare(make(fidelity="engine")), images, boxes)
        diff, agree = float(np.abs(uint8_route - ref).max()), float(np.mean(uint8_route.argmax(1) == ref.argmax(1)))
        print(f"info {make.__name__:16s} CPU uint8 route vs matmul route: max|d|={diff:.2e} top-1 agreement={agree:.1%}")
        for runner, tol in ((fp32, 1e-4), (bf16, 5e-2)):
            got = runner.predict(runner.prepare(make(fidelity="engine")), images.cuda(), boxes.cuda())
            diff, agree = float(np.abs(got - ref).max()), float(np.mean(got.argmax(1) == ref.argmax(1)))
            ok = diff <= tol and agree >= (1.0 if tol < 1e-3 else 0.95)
            failures += [] if ok else [f"{make.__name__} {runner.describe()['amp']}"]
            print(
                f"{'PASS' if ok else 'FAIL'} {make.__name__:16s} amp={runner.describe()['amp']:8s} "
                f"max|d|={diff:.2e} (tol {tol:g}) top-1 agreement={agree:.1%}"
            )

    print(f"\n## Runner throughput on CUDA, {args.gpu_images} crops already on the device")
    idx = torch.arange(args.gpu_images) % len(images)
    big, big_boxes = images[idx].cuda(), boxes[idx].cuda()
    for make in (FerMiniXception, PyEmotionNetV2):
        rates = {}
        for runner in (fp32, bf16):
            clf = runner.prepare(make(batch_size=1024, fidelity="engine"))
            runner.predict(clf, big[:1024], big_boxes[:1024])  # warm-up: cuDNN algorithm choice
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            runner.predict(clf, big, big_boxes)  # ends with a host copy: synchronised
            rates[runner.describe()["amp"]] = args.gpu_images / (time.perf_counter() - t0)
        print(
            f"{make.__name__:16s} fp32 {rates['off']:9.0f} img/s   bf16 {rates['bfloat16']:9.0f} img/s   "
            f"bf16/fp32 = {rates['bfloat16'] / rates['off']:.2f}x"
        )

    print("\n## OOM back-off: a ~270 MB/image fake classifier asked for batch 4096")
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Catch(level=logging.WARNING)
    logging.getLogger("engine.pipeline.runner").addHandler(handler)
    n = 4096
    hungry = fp32.prepare(hungry_classifier(batch_size=n))
    sub = torch.arange(n) % len(images)
    t0 = time.perf_counter()
    try:
        out = fp32.predict(hungry, images[sub].cuda(), boxes[sub].cuda())
        backed_off = [m for m in seen if "out of memory" in m]
        small = fp32.predict(
            fp32.prepare(hungry_classifier(batch_size=8)), images[:8].cuda(), boxes[:8].cuda()
        )
        on_cpu = cpu.predict(cpu.prepare(hungry_classifier(batch_size=4)), images[:4], boxes[:4])
        diff = max(float(np.abs(out[:8] - small).max()), float(np.abs(out[:4] - on_cpu).max()))
        ok = bool(backed_off) and diff < 1e-4 and out.shape == (n, 7)
        print(
            f"{'PASS' if ok else 'FAIL'} {len(backed_off)} halvings: {backed_off}; {n} rows in "
            f"{time.perf_counter() - t0:.1f} s; max|d| vs small batch / CPU = {diff:.1e}"
        )
    except torch.cuda.OutOfMemoryError as exc:
        ok = False
        print(f"FAIL: out of memory even at batch 1: {exc}")
    finally:
        logging.getLogger("engine.pipeline.runner").removeHandler(handler)
        torch.cuda.empty_cache()
    failures += [] if ok else ["oom back-off"]
    print(f"\n{'ALL PASS' if not failures else 'FAILED: ' + ', '.join(failures)}")
    return 1 if failures else 0
