"""Model backends on tiny models built here: Hugging Face (local folder), ONNX and TFLite."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from backend_models import PREP, RAW, RUNNER, faces, reference, tiny_net
from torch import nn

from classifiers.preprocess import Preprocessing


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


