"""dlib's face recognition ResNet read from its `.dat` and run in torch, checked against dlib itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.assets import asset_path
from engine.audit.dlib_resnet import (
    ASSET,
    DlibFaceResNet,
    load_dlib_arrays,
    load_dlib_face_resnet,
    read_dlib_face_resnet,
)

DAT = asset_path(ASSET)


def _dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def chips(real_faces) -> np.ndarray:
    """`(7, 150, 150, 3)` uint8 chips: the two portraits, four LFW faces, and the astronaut mirrored."""
    from engine.audit.identity import face_chips

    faces = real_faces(6)
    out = face_chips(faces.images, faces.landmarks.numpy()).round().byte().permute(0, 2, 3, 1).numpy()
    assert out.shape == (6, 150, 150, 3)
    return np.ascontiguousarray(np.concatenate([out, out[:1, :, ::-1]]))


@pytest.fixture(scope="module")
def net() -> DlibFaceResNet:
    return load_dlib_face_resnet()  # through the cached safetensors conversion


@pytest.fixture(scope="module")
def dlib_reference(chips) -> np.ndarray:
    if not _dlib_available():
        pytest.skip("dlib (facecf[identity], dlib-bin) is not installed: no oracle to compare with")
    import dlib

    model = dlib.face_recognition_model_v1(str(DAT))
    return np.asarray([np.asarray(d) for d in model.compute_face_descriptor(list(chips))], dtype=np.float64)


def test_file_layout():
    net = read_dlib_face_resnet(DAT)
    a = net.arrays
    assert a["stem.conv.weight"].shape == (32, 3, 7, 7)
    assert a["blocks.3.conv1.weight"].shape == (64, 32, 3, 3)
    assert a["blocks.13.conv2.weight"].shape == (256, 256, 3, 3)
    assert a["blocks.13.affine2.gamma"].shape == (256,)
    assert a["fc.weight"].shape == (128, 256)
    np.testing.assert_allclose(a["input.mean"], [122.782, 117.001, 104.298], rtol=1e-7)
    assert sum(v.size for v in a.values()) == 5_614_595
    assert net.meta["distance_threshold"] == pytest.approx(0.6)
    # The cached safetensors conversion holds exactly what the reader returns.
    cached = load_dlib_arrays()
    assert cached.keys() == a.keys() and all(np.array_equal(cached[k], a[k]) for k in a)


def test_descriptors_equal_dlib(net, chips, dlib_reference):
    got = net.descriptors(chips)
    assert got.shape == (7, 128) and got.dtype == np.float32
    assert np.abs(got - dlib_reference).max() < 1e-4
    # The affine layers kept apart (no folding into the convolutions) give the same descriptors.
    unfused = load_dlib_face_resnet(fuse=False).descriptors(chips)
    assert np.abs(unfused - dlib_reference).max() < 1e-4
    # Same person (mirrored astronaut) near, different people far, by dlib's 0.6 threshold.
    assert np.linalg.norm(got[0] - got[6]) < 0.3 < 0.6 < np.linalg.norm(got[0] - got[1])


def test_batch_equals_one_by_one(net, chips):
    x = torch.from_numpy(chips).permute(0, 3, 1, 2)
    with torch.inference_mode():
        batch = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(len(x))])
        as_float = net(x.float())
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-5)
    torch.testing.assert_close(batch, as_float, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(N, 3, 150, 150\)"):
        net(x[:, :, :100])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(net, chips):
    cuda = load_dlib_face_resnet(device="cuda")
    np.testing.assert_allclose(cuda.descriptors(chips), net.descriptors(chips), rtol=0, atol=1e-4)


def test_malformed_files_raise_clear_errors(tmp_path):
    data = DAT.read_bytes()
    bad = tmp_path / "bad.dat"

    bad.write_bytes(data[: len(data) // 2])  # truncated inside a tensor
    with pytest.raises(ValueError, match=r"byte offset \d+ expected .*tensor data.*end of file"):
        read_dlib_face_resnet(bad)

    bad.write_bytes(data[:300])  # truncated inside the wrapper versions / input layer
    with pytest.raises(ValueError, match="byte offset"):
        read_dlib_face_resnet(bad)

    bad.write_bytes(data.replace(b"loss_metric_2", b"loss_metric_9", 1))
    with pytest.raises(ValueError, match=r"byte offset 2 expected loss layer version string .*'loss_metric_9'"):
        read_dlib_face_resnet(bad)

    bad.write_bytes(data.replace(b"input_rgb_image_sized", b"input_rgb_image_sizzz", 1))
    with pytest.raises(ValueError, match="input layer version string"):
        read_dlib_face_resnet(bad)

    bad.write_bytes(data + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_dlib_face_resnet(bad)

    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="add_loss_layer version"):
        read_dlib_face_resnet(bad)

    # A different network of the same family: the first conv with 16 filters instead of 32.
    # num_filters 32, nr 7, nc 7, strides 2 2, paddings 0 0: each a dlib integer (control byte, value).
    start = data.index(bytes([1, 32, 1, 7, 1, 7, 1, 2, 1, 2, 1, 0, 1, 0]), data.index(b"con_4"))
    bad.write_bytes(data[:start] + bytes([1, 16]) + data[start + 2 :])
    with pytest.raises(ValueError, match=r"con layer stem.conv \(num_filters.*\(16, 7, 7, 2, 2, 0, 0\)"):
        read_dlib_face_resnet(bad)
