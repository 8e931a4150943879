"""Model backends on tiny models built here: PyTorch, Hugging Face, ONNX, TFLite; labels; unsafe pickles."""

from __future__ import annotations

import functools
import pathlib
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from classifiers.base import finish_outputs
from classifiers.labels import LABEL_SETS, canonical_label, resolve_labels
from classifiers.preprocess import Preprocessing
from classifiers.pyemotion import PyEmotionNet
from classifiers.torch_model import TorchClassifier, UnsafeCheckpointError
from engine.pipeline import BatchRunner

RAW = ("Angry", "happy", "Surprised", "ahegao")
PREP = {
    "crop": "face_box",
    "size": 16,
    "colour": "grey",
    "mean": 0.5,
    "std": 0.5,
    "layout": "nchw",
    "box_scale": 1.0,
}


def faces(n: int = 5, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 crops with a face box each (different boxes, so the crop path is exercised)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    x0 = torch.randint(0, 8, (n, 1), generator=g).float()
    boxes = torch.cat([x0, x0 + 2, x0 + 20, x0 + 22], dim=1)
    return images, boxes


def tiny_net(classes: int = len(RAW)) -> nn.Module:
    torch.manual_seed(0)
    return PyEmotionNet(in_channels=1, width=4, hidden=8, num_classes=classes, input_size=16).eval()


def reference(net: nn.Module, images: torch.Tensor, boxes: torch.Tensor, prep: dict = PREP) -> torch.Tensor:
    x = Preprocessing.from_config(prep).apply(images, boxes)  # uint8, as the runner passes it
    with torch.no_grad():
        return net(x)


RUNNER = BatchRunner(device="cpu", batch_size=2, progress="off")  # batch 2 of 5: the last batch is partial


# --- labels ----------------------------------------------------------------------------------------


def test_labels_map_to_canonical_and_keep_unknown_names():
    labels, raw = resolve_labels(RAW)
    assert labels == ("anger", "happiness", "surprise", "ahegao") and raw == RAW
    assert resolve_labels(LABEL_SETS["fer2013"])[0] == (
        "anger",
        "disgust",
        "fear",
        "happiness",
        "sadness",
        "surprise",
        "neutral",
    )
    ferplus = resolve_labels("ferplus")[0]
    assert ferplus[7] == "contempt" and ferplus[8:] == ("unknown", "not_face")
    assert "contempt" not in resolve_labels("affectnet7")[0]  # only where the model has it
    assert canonical_label("LABEL_3") == "label_3" and canonical_label(" Fearful ") == "fear"
    assert canonical_label("Happy_Face") == "happiness" and canonical_label(2) == "2"


def test_label_map_overrides_and_errors():
    labels, _ = resolve_labels(["LABEL_0", "LABEL_1", "LABEL_2"], {"LABEL_0": "happiness", "label_1": "Sad"})
    assert labels == ("happiness", "sadness", "label_2")
    with pytest.raises(ValueError, match="'happy' and 'Happiness' both map to 'happiness'"):
        resolve_labels(["happy", "Happiness"], owner="clf")
    with pytest.raises(ValueError, match=r"label_map keys \['hapy'\] match none"):
        resolve_labels(["happy"], {"hapy": "joy"})
    with pytest.raises(ValueError, match="not a known label set.*fer2013"):
        resolve_labels("fer2031")


def test_activations_and_sigmoid_normalisation():
    raw = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]])
    assert torch.allclose(finish_outputs(raw, "softmax", False, False).sum(1), torch.ones(2))
    sig = finish_outputs(raw, "sigmoid", False, True)
    assert torch.allclose(sig.sum(1), torch.ones(2))
    assert torch.allclose(sig, torch.sigmoid(raw) / torch.sigmoid(raw).sum(1, keepdim=True))
    assert torch.equal(finish_outputs(raw, "logits", False, False), raw)
    assert torch.equal(finish_outputs(raw, "softmax", True, False), raw)  # applied in the model: untouched
    with pytest.raises(ValueError, match="normalise_sigmoid=true needs activation=sigmoid"):
        TorchClassifier(labels=RAW, preprocessing=PREP, model=tiny_net(), normalise_sigmoid=True)


# --- PyTorch ---------------------------------------------------------------------------------------


def test_torch_safetensors_model_class_matches_the_module(tmp_path):
    from safetensors.torch import save_file

    net = tiny_net()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    clf = TorchClassifier(
        labels=RAW,
        preprocessing=PREP,
        checkpoint=str(tmp_path / "w.safetensors"),
        model_class="classifiers.pyemotion.PyEmotionNet",
        model_kwargs={"width": 4, "hidden": 8, "num_classes": 4, "input_size": 16},
        activation="sigmoid",
        applied_in_model=True,
        normalise_sigmoid=True,
    )
    assert not clf.loaded and clf.output_kind == "softmax"
    images, boxes = faces()
    got = RUNNER.predict(clf, images, boxes)
    want = reference(net, images, boxes)
    np.testing.assert_allclose(got, (want / want.sum(1, keepdim=True)).numpy(), atol=1e-6)
    assert clf.labels == ("anger", "happiness", "surprise", "ahegao")
    one_by_one = np.concatenate([RUNNER.predict(clf, images[i : i + 1], boxes[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(got, one_by_one, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torch_nested_state_dict_partial_model_and_torchscript(tmp_path):
    net = tiny_net()
    torch.save({"network": net.state_dict(), "epochs": 3, "accuracy": 0.5}, tmp_path / "ckpt.pt")
    factory = functools.partial(PyEmotionNet, 1, 4, 8, 4, 16)
    clf = TorchClassifier(
        labels=RAW,
        preprocessing=PREP,
        checkpoint=str(tmp_path / "ckpt.pt"),
        model=factory,
        activation="logits",
    )
    images, boxes = faces()
    want = reference(net, images, boxes).numpy()
    np.testing.assert_allclose(RUNNER.predict(clf, images, boxes), want, atol=1e-6)
    torch.jit.trace(net, torch.zeros(1, 1, 16, 16)).save(str(tmp_path / "net.ts"))
    scripted = TorchClassifier(
        labels=RAW, preprocessing=PREP, checkpoint=str(tmp_path / "net.ts"), activation="logits"
    )
    np.testing.assert_allclose(RUNNER.predict(scripted, images, boxes), want, atol=1e-6)
    assert clf.fingerprint() != scripted.fingerprint()


def test_torch_config_with_hydra_model_subconfig(tmp_path):
    from engine.config import check_component

    net = tiny_net()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    node = OmegaConf.create(
        {
            "_target_": "classifiers.torch_model.TorchClassifier",
            "model": {
                "_target_": "classifiers.pyemotion.PyEmotionNet",
                "_partial_": True,
                "width": 4,
                "hidden": 8,
                "num_classes": 4,
                "input_size": 16,
            },
            "checkpoint": str(tmp_path / "w.pt"),
            "labels": list(RAW),
            "preprocessing": PREP,
            "activation": "logits",
        }
    )
    clf = check_component("classifiers.mine", node)
    assert not clf.loaded  # instantiation is cheap: nothing is built or read yet
    images, boxes = faces(3)
    np.testing.assert_allclose(
        RUNNER.predict(clf, images, boxes), reference(net, images, boxes).numpy(), atol=1e-6
    )


class _Marker:
    """Unpickling this would create a file: proof that refused pickles run no code."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_unsafe_pickles_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(2), "payload": _Marker(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"w": np.zeros(2), "payload": _Marker(marker)}, f)
    torch.save(tiny_net(), tmp_path / "whole_module.pt")  # a pickled nn.Module: code by reference
    for name in ("evil.pt", "evil.pkl", "whole_module.pt"):
        clf = TorchClassifier(
            labels=RAW, preprocessing=PREP, checkpoint=str(tmp_path / name), model=tiny_net()
        )
        with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*state_dict\(\).*safetensors"):
            RUNNER.predict(clf, *faces(1))
    assert not marker.exists()


def test_torch_config_errors_are_loud(tmp_path):
    with pytest.raises(ValueError, match="checkpoint is required"):
        TorchClassifier(labels=RAW, preprocessing=PREP, model_class="classifiers.pyemotion.PyEmotionNet")
    with pytest.raises(ValueError, match="checkpoint='/nope.pt': no such file"):
        TorchClassifier(labels=RAW, preprocessing=PREP, checkpoint="/nope.pt", model=tiny_net())
    torch.save(tiny_net(classes=3).state_dict(), tmp_path / "w3.pt")
    wrong = TorchClassifier(
        labels=RAW, preprocessing=PREP, checkpoint=str(tmp_path / "w3.pt"), model=tiny_net
    )
    with pytest.raises(ValueError, match="does not fit the network"):
        RUNNER.predict(wrong, *faces(1))
    three = TorchClassifier(
        labels=RAW,
        preprocessing=PREP,
        checkpoint=str(tmp_path / "w3.pt"),
        model=functools.partial(tiny_net, 3),
    )
    with pytest.raises(ValueError, match=r"returns shape \(1, 3\) but 4 labels"):
        RUNNER.predict(three, *faces(1))


# --- Hugging Face ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> pathlib.Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    id2label = {0: "Angry", 1: "Happy", 2: "Neutral", 3: "LABEL_3"}
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
    ).save_pretrained(folder)
    return folder


def test_hf_local_folder_labels_preprocessing_and_outputs(tiny_vit):
    from PIL import Image
    from transformers import AutoImageProcessor, ViTForImageClassification

    from classifiers.hf import HFClassifier

    clf = HFClassifier(str(tiny_vit), preprocessing={"crop": "full"})
    assert clf.labels == ("anger", "happiness", "neutral", "label_3")
    assert clf.preprocessing.size == 32 and clf.preprocessing.colour == "rgb"
    images, boxes = faces(3)
    # On a 32 px image with crop=full, the engine's preprocessing must equal the processor's.
    processor = AutoImageProcessor.from_pretrained(tiny_vit)
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    expected = processor(images=pil, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(clf.preprocess(images.float() / 255, boxes), expected, atol=1e-5, rtol=0)
    model = ViTForImageClassification.from_pretrained(tiny_vit).eval()
    with torch.no_grad():
        want = torch.softmax(model(pixel_values=expected).logits, dim=1).numpy()
    np.testing.assert_allclose(RUNNER.predict(clf, images, boxes), want, atol=1e-5)
    assert set(clf.fingerprint()["weights"]) == {"folder_sha256"}


def test_hf_unreachable_hub_id_gives_a_clear_offline_error(monkeypatch):
    from classifiers.hf import HFClassifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clf = HFClassifier("no-such-org/no-such-emotion-model")  # cheap: nothing is fetched at construction
    with pytest.raises(
        ValueError, match=r"'no-such-org/no-such-emotion-model'.*not a local folder.*set model=DIR"
    ):
        clf.labels  # noqa: B018


# --- ONNX ------------------------------------------------------------------------------------------


def _export_onnx(net: nn.Module, path: pathlib.Path, dynamic: bool, labels: list[str] | None = None) -> None:
    import onnx

    torch.onnx.export(
        net,
        (torch.zeros(1, 1, 16, 16),),
        str(path),
        input_names=["x"],
        output_names=["scores"],
        dynamic_axes={"x": {0: "n"}, "scores": {0: "n"}} if dynamic else None,
        dynamo=False,
    )
    if labels:
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, {"labels": ",".join(labels)})
        onnx.save(model, str(path))


@pytest.mark.filterwarnings("ignore:Constant folding:UserWarning")
def test_onnx_dynamic_and_fixed_batch_with_metadata_labels(tmp_path):
    pytest.importorskip("onnx")  # the exporter's model editing; a dev extra
    from classifiers.onnx_model import ONNXClassifier

    net = tiny_net()
    _export_onnx(net, tmp_path / "dyn.onnx", dynamic=True, labels=list(RAW))
    _export_onnx(net, tmp_path / "one.onnx", dynamic=False)
    images, boxes = faces()
    want = reference(net, images, boxes)
    dyn = ONNXClassifier(
        str(tmp_path / "dyn.onnx"), preprocessing=PREP, activation="sigmoid", applied_in_model=True
    )
    assert dyn.labels == ("anger", "happiness", "surprise", "ahegao")  # from the model's metadata
    np.testing.assert_allclose(RUNNER.predict(dyn, images, boxes), want.numpy(), atol=1e-5)
    one = ONNXClassifier(
        str(tmp_path / "one.onnx"), preprocessing=PREP, labels=list(RAW), activation="logits"
    )
    np.testing.assert_allclose(RUNNER.predict(one, images, boxes), want.numpy(), atol=1e-5)
    bad = ONNXClassifier(str(tmp_path / "one.onnx"), preprocessing={**PREP, "size": 20}, labels=list(RAW))
    with pytest.raises(
        ValueError, match=r"input 'x' has shape \[1, 1, 16, 16\] but preprocessing gives \[N, 1, 20, 20\]"
    ):
        RUNNER.predict(bad, images, boxes)
    with pytest.raises(ValueError, match="labels is required"):
        ONNXClassifier(str(tmp_path / "one.onnx"), preprocessing=PREP).labels  # noqa: B018


# --- TFLite ----------------------------------------------------------------------------------------


def tiny_tflite(path: pathlib.Path, weight: np.ndarray, bias: np.ndarray, size: int = 8) -> None:
    """A TFLite flatbuffer written with the schema's object API: mean over H, W -> dense -> softmax."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT()
    model.version, model.buffers = 3, [s.BufferT()]

    def tensor(name, shape, dtype=s.TensorType.FLOAT32, data=None, signature=None):
        buf = s.BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        model.buffers.append(buf)
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, len(model.buffers) - 1
        if signature is not None:
            t.shapeSignature = list(signature)
        return t

    k, c = weight.shape
    graph = s.SubGraphT()
    graph.tensors = [
        tensor("image", [1, size, size, c], signature=[1, size, size, c]),
        tensor("axes", [2], s.TensorType.INT32, np.array([1, 2], np.int32)),
        tensor("pooled", [1, c]),
        tensor("w", [k, c], data=weight.astype(np.float32)),
        tensor("b", [k], data=bias.astype(np.float32)),
        tensor("logits", [1, k]),
        tensor("probs", [1, k]),
    ]
    graph.inputs, graph.outputs = [0], [6]
    codes = []
    for op in (s.BuiltinOperator.MEAN, s.BuiltinOperator.FULLY_CONNECTED, s.BuiltinOperator.SOFTMAX):
        code = s.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = op, op, 1
        codes.append(code)
    model.operatorCodes = codes
    reducer, dense, softmax = s.ReducerOptionsT(), s.FullyConnectedOptionsT(), s.SoftmaxOptionsT()
    softmax.beta = 1.0
    graph.operators = []
    for i, (ins, outs, kind, opts) in enumerate(
        [
            ([0, 1], [2], s.BuiltinOptions.ReducerOptions, reducer),
            ([2, 3, 4], [5], s.BuiltinOptions.FullyConnectedOptions, dense),
            ([5], [6], s.BuiltinOptions.SoftmaxOptions, softmax),
        ]
    ):
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs, op.builtinOptionsType, op.builtinOptions = (
            i,
            ins,
            outs,
            kind,
            opts,
        )
        graph.operators.append(op)
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def test_tflite_batched_matches_numpy_reference(tmp_path):
    pytest.importorskip("ai_edge_litert")  # the optional extra facecf[tflite]
    from classifiers.tflite_model import TFLiteClassifier

    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(4, 3)), rng.normal(size=4)
    tiny_tflite(tmp_path / "tiny.tflite", weight, bias)
    prep = {"crop": "face_box", "size": 8, "colour": "rgb", "mean": 0.0, "std": 1.0, "layout": "nhwc"}
    clf = TFLiteClassifier(
        str(tmp_path / "tiny.tflite"), labels=list(RAW), preprocessing=prep, applied_in_model=True
    )
    images, boxes = faces()
    got = RUNNER.predict(clf, images, boxes)
    x = Preprocessing.from_config(prep).apply(images, boxes).numpy()
    z = x.mean(axis=(1, 2)) @ weight.T + bias
    want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert clf.model.batched is True  # the batch dimension was resized: one call per batch
    bad = TFLiteClassifier(
        str(tmp_path / "tiny.tflite"), labels=list(RAW), preprocessing={**prep, "layout": "nchw"}
    )
    with pytest.raises(
        ValueError, match=r"input shape is \[1, 8, 8, 3\] but preprocessing gives \[N, 3, 8, 8\]"
    ):
        RUNNER.predict(bad, images, boxes)


def test_tflite_missing_runtime_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    from classifiers.tflite_model import load_interpreter

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        load_interpreter(tmp_path / "x.tflite", None)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_backend_without_preprocessing_fails_when_built(backend, tmp_path):
    # The model file cannot say how its input was prepared: the config must, and a missing block is
    # an error at build time (before any run folder exists), not at the first prediction.
    if backend == "onnx":
        from classifiers.onnx_model import ONNXClassifier as cls

        kwargs = {"path": None, "labels": list(RAW)}
    else:
        cls = TorchClassifier
        kwargs = {"labels": list(RAW), "model": tiny_net()}
    with pytest.raises(ValueError, match=r"\.preprocessing is required"):
        cls(preprocessing=None, **kwargs)


def test_runner_backs_off_on_out_of_memory_and_remembers():
    # A classifier that "runs out of CUDA memory" above 3 images per batch (the exception class
    # exists without a GPU): the runner halves until it fits, and the next call starts there.
    from engine.types import Classifier

    class Hungry(Classifier):
        name, labels, batch_size = "hungry", ("happiness", "sadness"), 16

        def __init__(self):
            self.seen: list[int] = []

        def preprocess(self, images, boxes):
            return images.float().mean(dim=(1, 2, 3))

        def predict(self, inputs):
            self.seen.append(len(inputs))
            if len(inputs) > 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return torch.stack([inputs / 255, 1 - inputs / 255], dim=1)

    runner = BatchRunner(device="cpu", progress="off")
    clf = Hungry()
    images, boxes = faces(n=10)
    out = runner.predict(clf, images, boxes)
    assert out.shape == (10, 2) and clf.seen[:3] == [10, 5, 2]  # 10 -> 5 -> 2 fits
    np.testing.assert_allclose(out[:, 0], images.float().mean(dim=(1, 2, 3)).numpy() / 255, rtol=1e-6)
    clf.seen.clear()
    runner.predict(clf, images, boxes)
    assert max(clf.seen) == 2, "a later call must not run out of memory again"
