"""Model backends on tiny models built here: labels, PyTorch (safetensors, pickles, TorchScript), errors."""

from __future__ import annotations

import functools
import pathlib
import pickle

import numpy as np
import pytest
import torch
from backend_models import PREP, RAW, RUNNER, faces, reference, tiny_net
from omegaconf import OmegaConf

from classifiers.base import finish_outputs
from classifiers.labels import LABEL_SETS, canonical_label, resolve_labels
from classifiers.pyemotion import PyEmotionNet
from classifiers.torch_model import TorchClassifier, UnsafeCheckpointError
from engine.pipeline import BatchRunner

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


def test_edit_step_halves_the_editor_batch_on_cuda_out_of_memory(tmp_path, tiny_face_batch):
    from engine.cache import WorkCache
    from engine.pipeline.backoff import BatchBackoff
    from engine.pipeline.steps import EditStep
    from engine.types import Editor, EditResult

    class Hungry(Editor):
        property = "brightness"

        def __init__(self):
            self.seen = []

        def edit(self, batch, strength, seed):
            self.seen.append(len(batch))
            if len(batch) > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return EditResult((batch.images * 0.5).clamp(0, 1), torch.ones_like(batch.images[:, :1]),
                              [{"strength": strength}])

    editor, backoff = Hungry(), BatchBackoff()
    step = EditStep(WorkCache(tmp_path / "cache"), editor, "fp", seed=0, backoff=backoff)
    out = step.run(tiny_face_batch, [f"k{i}" for i in range(len(tiny_face_batch))], 1.0)
    assert len(out) == 4 and editor.seen[:3] == [4, 2, 1]
    for (image, _, meta), face in zip(out, tiny_face_batch.images):
        expected = (face * 0.5).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(image, expected) and meta["strength"] == 1.0
    editor.seen.clear()
    step2 = EditStep(WorkCache(tmp_path / "cache2"), editor, "fp", seed=0, backoff=backoff)
    step2.run(tiny_face_batch, [f"j{i}" for i in range(len(tiny_face_batch))], 1.0)
    assert max(editor.seen) == 1, "a later chunk starts from the batch that fitted"
