"""Sanity and fidelity numbers for the built-in classifier zoo (the generated tables in docs/ZOO.md).

The zoo is built from `conf/classifier/zoo.yaml` as an experiment builds it, so every figure is for
the zoo as configured (each table names the models' `fidelity`). Faces are aligned by the engine's
`FaceAnalyzer` exactly as in an experiment (the first face of each demo image).

1. Each model's top predictions on the two public-domain portraits (Eileen Collins,
   `skimage.data.astronaut()`; Grace Hopper, matplotlib's `grace_hopper.jpg`).
2. Agreement between the emotion models on the demo set: pairwise top-1 agreement, Cohen's kappa,
   top-1 label counts.
3. For the blendshapes, which are not emotions: Spearman correlation of each model's P(happiness)
   with the mean of MediaPipe's mouthSmileLeft/Right.
4. Fidelity: each zoo model (and fer's HDF5 port) against its package's own arrays
   (`tests/data/package/`, made by `scripts/package_arrays.py`): the largest input difference in grey
   levels, the largest output difference and top-1 agreement; and on the demo set, how far the
   engine's own route (`fidelity: engine`) moves outputs and labels from the package route.

Usage::

    python scripts/zoo_sanity.py            # prints the tables
    python scripts/zoo_sanity.py --write    # and writes them into docs/ZOO.md
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data import DemoDataset  # noqa: E402
from engine.faces import FaceAnalyzer  # noqa: E402
from engine.pipeline import BatchRunner  # noqa: E402

PORTRAITS = ("astronaut", "grace_hopper")
DOC = ROOT / "docs" / "ZOO.md"
BEGIN, END = "<!-- zoo_sanity: begin -->", "<!-- zoo_sanity: end -->"
PACKAGE_ARRAYS = ROOT / "tests" / "data" / "package"
#: Per model: the package arrays it is checked against, and the grey levels per unit of its input
#: (inputs in [-1, 1] span 255 levels over 2 units, inputs in [0, 1] over 1).
REFERENCE = {"fer_tflite": ("fer", 127.5), "fer_minixception": ("fer", 127.5),
             "facex_mobilenetv2": ("facex", 255.0), "pyemotion_netv2": ("pyemotion", 127.5)}


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label vectors (chance agreement from each rater's own marginals)."""
    labels = np.union1d(a, b)
    p_o = float(np.mean(a == b))
    p_e = float(sum(np.mean(a == k) * np.mean(b == k) for k in labels))
    return float("nan") if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


def classifier_nodes(config: str) -> dict:
    """The classifier nodes of conf/classifier/<config>.yaml."""
    from omegaconf import OmegaConf

    return dict(OmegaConf.load(ROOT / "conf" / "classifier" / f"{config}.yaml").items())


def build(node, **overrides):  # noqa: ANN001, ANN201
    """A classifier built by Hydra from its config node, as an experiment builds it."""
    from hydra.utils import instantiate

    return instantiate(node, **overrides)


def as_reference(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A model input (NCHW with one channel, or NHWC) in the reference arrays' layout (one grey plane)."""
    for candidate in (x, x[:, 0], x[..., 0]):
        if candidate.shape == shape:
            return candidate
    raise ValueError(f"input of shape {x.shape} does not match the reference's {shape}")


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


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def package_checks(nodes: dict) -> list[str]:
    """Each model's package route against its package's own arrays (section 4, first table)."""
    rows = []
    for name, node in nodes.items():
        arrays_name, levels = REFERENCE[name]
        got = np.load(PACKAGE_ARRAYS / f"{arrays_name}.npz")
        images = torch.from_numpy(got["crops"]).permute(0, 3, 1, 2).contiguous()
        boxes = torch.from_numpy(got["boxes"])
        clf = build(node, fidelity="package")
        with torch.inference_mode():
            x = clf.preprocess(images, boxes)
            out = clf.predict(x).numpy()
        x = as_reference(x.float().numpy(), got["inputs"].shape)
        pixel = float(np.abs(x - got["inputs"]).max() * levels)
        ref = got["outputs"]
        if clf.name == "pyemotion_netv2" and getattr(clf, "normalise_sigmoid", False):
            ref = ref / ref.sum(axis=1, keepdims=True)  # the package's raw sigmoids, normalised as configured
        out_diff = f"{np.abs(out - ref).max():.2g}"
        agree = f"{int((out.argmax(1) == ref.argmax(1)).sum())} / {len(ref)}"
        if name == "fer_minixception":  # fer's arrays are its default (TFLite) model's: another model
            out_diff, agree = f"{out_diff} (the HDF5 model vs FER()'s TFLite model)", f"{agree} (idem)"
        rows.append([clf.name, f"`{arrays_name}.npz`, {len(images)} faces", f"{pixel:.3g}", out_diff, agree])
    return table(["model", "package arrays", "max input difference (grey levels)", "max output difference",
                  "top-1 agreement"], rows)


def route_checks(nodes: dict, runner: BatchRunner, images: torch.Tensor, boxes: torch.Tensor) -> list[str]:
    """On the demo faces: how far the engine route moves each model from the package route."""
    rows = []
    for name, node in nodes.items():
        package = runner.predict(build(node, fidelity="package"), images, boxes)
        engine = runner.predict(build(node, fidelity="engine"), images, boxes)
        per_face = np.abs(package - engine).max(axis=1)
        same = np.mean(package.argmax(1) == engine.argmax(1))
        rows.append([name, f"{np.median(per_face):.3f}", f"{per_face.max():.2f}", f"{same:.0%}"])
    return table(["model", "median max \\|Δp\\| per face", "largest", "top-1 unchanged"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-lfw", type=int, default=100, help="LFW faces of the demo set to include")
    parser.add_argument("--write", action="store_true", help=f"write the tables into {DOC.relative_to(ROOT)}")
    args = parser.parse_args()

    t0 = time.perf_counter()
    ids, images, boxes, n_records = aligned_demo_faces(args.n_lfw)
    runner = BatchRunner(device="cpu", progress="off")
    nodes = classifier_nodes("zoo")
    blend = build(nodes.pop("mediapipe_blendshapes"))
    emotion_models = [build(node) for node in nodes.values()]
    probs = {clf.name: runner.predict(clf, images, boxes) for clf in emotion_models}
    scores = runner.predict(blend, images, boxes)
    blend.close()
    fidelity = ", ".join(f"{c.name} `{c.fidelity}`" for c in emotion_models)

    out = [f"Generated by `python scripts/zoo_sanity.py --write` from `conf/classifier/zoo.yaml` ({fidelity}); "
           f"demo set: {len(ids)} of {n_records} images with a face found (the first face of each).", ""]
    out += ["### Top predictions on the two public-domain portraits", ""]
    rows = [ids.index(p) for p in PORTRAITS]
    cells = [[clf.name] + [top_k(clf.labels, probs[clf.name][r]) for r in rows] for clf in emotion_models]
    no_neutral = [i for i, name in enumerate(blend.labels) if name != "_neutral"]
    sub = tuple(blend.labels[i] for i in no_neutral)
    cells.append([f"{blend.name} (scores, not probabilities)"] + [top_k(sub, scores[r, no_neutral]) for r in rows])
    out += table(["model", "Eileen Collins (`skimage.data.astronaut()`)", "Grace Hopper (matplotlib `grace_hopper.jpg`)"],
                 cells)

    out += ["", f"### Agreement between the emotion models on the demo set (n = {len(ids)})", ""]
    top1 = {c.name: np.array(c.labels)[np.argmax(probs[c.name], axis=1)] for c in emotion_models}
    names = [c.name for c in emotion_models]
    pairs = [[f"{a} vs {b}", f"{np.mean(top1[a] == top1[b]):.2f}", f"{cohen_kappa(top1[a], top1[b]):.2f}"]
             for a, b in itertools.combinations(names, 2)]
    all_agree = np.mean(np.all([top1[n] == top1[names[0]] for n in names], axis=0))
    out += table(["pair", "top-1 agreement", "Cohen's kappa"], pairs + [["all three", f"{all_agree:.2f}", ""]])
    labels = sorted(set(emotion_models[0].labels))
    out += [""] + table(["top-1 counts", *labels],
                        [[n, *(int(np.sum(top1[n] == k)) for k in labels)] for n in names])

    smile = scores[:, [blend.labels.index("mouthSmileLeft"), blend.labels.index("mouthSmileRight")]].mean(axis=1)
    found = ~np.isnan(smile)
    rho_rows = []
    for clf in emotion_models:
        rho, p = spearmanr(probs[clf.name][found, clf.labels.index("happiness")], smile[found])
        rho_rows.append([clf.name, f"{rho:.2f}", f"{p:.1g}"])
    out += [""] + table([f"P(happiness) vs MediaPipe smile (mean of mouthSmileLeft/Right), n = {int(found.sum())}",
                         "Spearman ρ", "p"], rho_rows)

    checked = {**nodes, **classifier_nodes("fer_hdf5")}
    out += ["", "### Fidelity: the package route against the packages' own arrays", ""]
    out += package_checks(checked)
    out += ["", f"### What the engine route would change on the demo set (n = {len(ids)})", ""]
    out += route_checks(checked, runner, images, boxes)
    out += ["", f"({time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} CPU threads.)"]
    text = "\n".join(out)
    print(text)
    if args.write:
        from engine.report.files import write_between_markers

        write_between_markers(DOC, BEGIN, END, text)
        print(f"\nwritten to {DOC}")


if __name__ == "__main__":
    main()
