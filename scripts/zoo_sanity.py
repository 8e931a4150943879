"""Sanity numbers for the built-in classifier zoo (the tables in docs/ZOO.md).

1. Each zoo model's top predictions on the two public-domain portraits (Eileen Collins,
   `skimage.data.astronaut()`; Grace Hopper, matplotlib's `grace_hopper.jpg`), aligned by the engine's
   `FaceAnalyzer` exactly as in an experiment.
2. Agreement between the three emotion models on the demo set (`DemoDataset`: the two portraits plus
   100 LFW faces, those the analyzer finds): pairwise top-1 agreement and Cohen's kappa.
3. For the blendshapes, which are not emotions: Spearman correlation of each model's P(happiness)
   with the mean of MediaPipe's mouthSmileLeft/Right.

Usage::

    python scripts/zoo_sanity.py            # prints Markdown tables
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from classifiers.blendshapes import MediaPipeBlendshapes
from classifiers.facex import FacexMobileNetV2
from classifiers.fer_minixception import FerMiniXception
from classifiers.pyemotion import PyEmotionNetV2
from engine.data import DemoDataset
from engine.faces import FaceAnalyzer
from engine.pipeline import BatchRunner

PORTRAITS = ("astronaut", "grace_hopper")


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label vectors (chance agreement from each rater's own marginals)."""
    labels = np.union1d(a, b)
    p_o = float(np.mean(a == b))
    p_e = float(sum(np.mean(a == k) * np.mean(b == k) for k in labels))
    return float("nan") if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


def aligned_demo_faces(n_lfw: int) -> tuple[list[str], torch.Tensor, torch.Tensor, int]:
    analyzer = FaceAnalyzer()
    ids, crops, boxes = [], [], []
    records = list(DemoDataset(n_lfw=n_lfw))
    for rec in records:
        fa, crop = analyzer.analyse(rec.image_id, rec.load())
        if fa.ok:
            ids.append(rec.image_id)
            crops.append(crop)
            boxes.append(fa.box)
    analyzer.close()
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    return ids, images, torch.from_numpy(np.stack(boxes)), len(records)


def top_k(labels: tuple[str, ...], row: np.ndarray, k: int = 3) -> str:
    order = np.argsort(-row)[:k]
    return ", ".join(f"{labels[i]} {row[i]:.2f}" for i in order)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-lfw", type=int, default=100, help="LFW faces of the demo set to include")
    args = parser.parse_args()

    t0 = time.perf_counter()
    ids, images, boxes, n_records = aligned_demo_faces(args.n_lfw)
    runner = BatchRunner(device="cpu", progress="off")
    emotion_models = [FerMiniXception(), FacexMobileNetV2(), PyEmotionNetV2()]
    blend = MediaPipeBlendshapes()
    probs = {clf.name: runner.predict(clf, images, boxes) for clf in emotion_models}
    scores = runner.predict(blend, images, boxes)
    blend.close()
    elapsed = time.perf_counter() - t0

    print(f"Demo set: {len(ids)} of {n_records} images with a face found; {elapsed:.0f} s on CPU.\n")
    print("### Top predictions on the portraits\n")
    print("| model | " + " | ".join(PORTRAITS) + " |")
    print("|---|" + "---|" * len(PORTRAITS))
    rows = [ids.index(p) for p in PORTRAITS]
    for clf in emotion_models:
        cells = [top_k(clf.labels, probs[clf.name][r]) for r in rows]
        print(f"| {clf.name} | " + " | ".join(cells) + " |")
    no_neutral = [i for i, name in enumerate(blend.labels) if name != "_neutral"]
    sub = tuple(blend.labels[i] for i in no_neutral)
    cells = [top_k(sub, scores[r, no_neutral]) for r in rows]
    print(f"| {blend.name} (scores, not probabilities) | " + " | ".join(cells) + " |")

    print(f"\n### Agreement between the emotion models on the demo set (n = {len(ids)})\n")
    print("| pair | top-1 agreement | Cohen's kappa |")
    print("|---|---|---|")
    top1 = {c.name: np.array(c.labels)[np.argmax(probs[c.name], axis=1)] for c in emotion_models}
    for a, b in itertools.combinations([c.name for c in emotion_models], 2):
        print(f"| {a} vs {b} | {np.mean(top1[a] == top1[b]):.2f} | {cohen_kappa(top1[a], top1[b]):.2f} |")
    all_three = np.mean(
        (top1[emotion_models[0].name] == top1[emotion_models[1].name])
        & (top1[emotion_models[1].name] == top1[emotion_models[2].name])
    )
    print(f"| all three | {all_three:.2f} | |")

    print("\n### Top-1 label counts on the demo set\n")
    labels = sorted(set(emotion_models[0].labels))
    print("| model | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for clf in emotion_models:
        counts = [int(np.sum(top1[clf.name] == k)) for k in labels]
        print(f"| {clf.name} | " + " | ".join(map(str, counts)) + " |")

    smile = scores[:, [blend.labels.index("mouthSmileLeft"), blend.labels.index("mouthSmileRight")]].mean(
        axis=1
    )
    found = ~np.isnan(smile)
    print(f"\n### P(happiness) against MediaPipe's smile score (n = {int(found.sum())})\n")
    print("| model | Spearman rho | p |")
    print("|---|---|---|")
    for clf in emotion_models:
        happy = probs[clf.name][:, clf.labels.index("happiness")]
        rho, p = spearmanr(happy[found], smile[found])
        print(f"| {clf.name} | {rho:.2f} | {p:.1g} |")


if __name__ == "__main__":
    main()
