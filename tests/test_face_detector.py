"""The full-range face detector (`engine.faces.detector`): real faces, group photos, letterbox geometry.

Needs the `face_detection_full_range` asset in the cache (tests run offline). `engine.faces.detector`
registers that asset when imported, so this module imports it inside fixtures only: at collection
time the registry then holds only the assets `test_architecture` knows.

Faces for the synthetic group photos: Eileen Collins (`skimage.data.astronaut()`) and Grace Hopper
(matplotlib's sample) cut with their hair and shoulders, and upscaled LFW faces (25 px grey, tight).
A face's size is the side of the square box the detector draws around it.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

#: Face centre (x, y) and size in each portrait: where the detector puts them on the whole photo.
PORTRAIT_FACES = {"astronaut": ((225.0, 119.0), 104.0), "grace_hopper": ((266.0, 230.0), 200.0)}
#: (face, size in px, centre x, centre y) on a 1280x720 canvas: sizes from 40 to 200 px.
GROUP = [("astronaut", 200, 190, 480), ("grace_hopper", 120, 520, 170), ("lfw_0", 150, 800, 520),
         ("astronaut", 72, 860, 150), ("lfw_2", 100, 1090, 330), ("grace_hopper", 40, 1180, 620)]


def portrait(name: str) -> np.ndarray:
    if name == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def face_patch(name: str, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """A face of `size` px: the patch to paste and the face centre within it."""
    if name.startswith("lfw_"):
        import skimage.data

        grey = (skimage.data.lfw_subset()[int(name[4:])] * 255).round().astype(np.uint8)
        patch = cv2.resize(np.repeat(grey[..., None], 3, axis=2), (size, size), interpolation=cv2.INTER_CUBIC)
        return patch, (size / 2, size / 2)
    rgb = portrait(name)
    (cx, cy), face = PORTRAIT_FACES[name]
    half = 0.9 * face  # the face and as much again around it: hair, shoulders
    x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
    x1, y1 = min(rgb.shape[1], round(cx + half)), min(rgb.shape[0], round(cy + half))
    s = size / face
    patch = cv2.resize(rgb[y0:y1, x0:x1], (round((x1 - x0) * s), round((y1 - y0) * s)),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    return patch, ((cx - x0) * s, (cy - y0) * s)


def group_photo(layout=GROUP, width: int = 1280, height: int = 720, grey: int = 128) -> np.ndarray:
    """Faces pasted on a neutral background at the layout's centres; the canvas edge may cut a patch's
    surroundings, never the face."""
    canvas = np.full((height, width, 3), grey, dtype=np.uint8)
    for name, size, cx, cy in layout:
        assert size / 2 <= cx <= width - size / 2 and size / 2 <= cy <= height - size / 2
        patch, (ox, oy) = face_patch(name, size)
        x0, y0 = round(cx - ox), round(cy - oy)
        x1, y1 = min(width, x0 + patch.shape[1]), min(height, y0 + patch.shape[0])
        canvas[max(0, y0):y1, max(0, x0):x1] = patch[max(0, -y0):y1 - y0, max(0, -x0):x1 - x0]
    return canvas


def matches(faces, size: float, cx: float, cy: float) -> list:
    """The detections whose box centre lies within a quarter of `size` of (cx, cy)."""
    return [f for f in faces if abs((f.box[0] + f.box[2]) / 2 - cx) < size / 4
            and abs((f.box[1] + f.box[3]) / 2 - cy) < size / 4]


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector():
    from engine.faces.detector import FullRangeFaceDetector

    return FullRangeFaceDetector()


@pytest.fixture(scope="module")
def tiled():
    from engine.faces.detector import FullRangeFaceDetector

    return FullRangeFaceDetector(tile=384)  # 40 px faces are 20 px on the model's input


@pytest.fixture(scope="module")
def landmarker():
    from engine.faces import FaceLandmarker

    lm = FaceLandmarker()
    yield lm
    lm.close()


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_portrait_agrees_with_the_landmarker(detector, landmarker, name):
    from engine.faces import landmark_box

    rgb = portrait(name)
    faces = detector.detect(rgb)
    assert len(faces) == 1
    face = faces[0]
    lm = landmarker.detect(rgb)["landmarks"]
    assert iou(face.box, landmark_box(lm)) > 0.5
    # Keypoints 0 and 1 are the person's right and left eye, as irises 468 and 473.
    irises = lm[[468, 473], :2]
    inter_ocular = float(np.hypot(*(irises[1] - irises[0])))
    err = np.hypot(*(face.keypoints[:2] - irises).T)
    assert err.max() < 0.1 * inter_ocular, (err, inter_ocular)
    assert face.keypoints.shape == (6, 2) and 0.5 <= face.score <= 1.0


def test_equals_mediapipe_own_face_detector():
    """With MediaPipe's bilinear letterbox, detections equal those of MediaPipe's Tasks FaceDetector run
    on the same model file: same anchors, decoding, weighted suppression and projection."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from engine.faces.detector import FullRangeFaceDetector
    from engine.faces.landmarker import quiet_native_stderr

    ours = FullRangeFaceDetector(antialias=False)
    options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=ours.model_path),
                                         min_detection_confidence=0.5, min_suppression_threshold=0.3)
    with quiet_native_stderr():
        reference = vision.FaceDetector.create_from_options(options)
    try:
        for rgb in (portrait("astronaut"), portrait("grace_hopper"), group_photo()):
            h, w = rgb.shape[:2]
            with quiet_native_stderr():
                ref = reference.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)).detections
            got = ours.detect(rgb)
            assert len(got) == len(ref) >= 1
            for g, r in zip(got, sorted(ref, key=lambda d: -d.categories[0].score)):
                bb = r.bounding_box  # whole pixels
                assert np.allclose(g.box, [bb.origin_x, bb.origin_y, bb.origin_x + bb.width,
                                           bb.origin_y + bb.height], atol=2.0)
                assert np.allclose(g.keypoints, [(k.x * w, k.y * h) for k in r.keypoints], atol=1.0)
                assert g.score == pytest.approx(r.categories[0].score, abs=0.01)
    finally:
        reference.close()


def test_group_photo_every_face_once_with_tiles(tiled):
    faces = tiled.detect(group_photo())
    for name, size, cx, cy in GROUP:
        found = matches(faces, size, cx, cy)
        assert len(found) == 1, (name, size, found)
        assert 0.7 * size < found[0].width < 1.4 * size, (name, size, found[0].box)
    assert len(faces) == len(GROUP)


def test_group_photo_whole_image_finds_the_large_faces(detector):
    """One pass on the whole 1280x720 photo finds the portraits' faces of 100 px and more, once each,
    and nothing spurious. (It misses the smaller ones, and the tight LFW crops, which lack a head
    outline: those need tiles.)"""
    faces = detector.detect(group_photo())
    found = [matches(faces, size, cx, cy) for _, size, cx, cy in GROUP]
    for (name, size, _, _), hits in zip(GROUP, found):
        assert len(hits) <= 1
        if size >= 100 and not name.startswith("lfw_"):
            assert len(hits) == 1, (name, size)
    assert len(faces) == sum(len(h) for h in found)


@pytest.mark.parametrize("image", ["blank", "black", "noise", "gradient"])
def test_no_face_where_there_is_none(detector, tiled, image):
    rng = np.random.default_rng(0)
    rgb = {"blank": np.full((720, 1280, 3), 128, np.uint8), "black": np.zeros((480, 640, 3), np.uint8),
           "noise": rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8),
           "gradient": np.repeat(np.linspace(0, 255, 900, dtype=np.uint8)[None, :, None], 600, 0).repeat(3, 2)}
    assert detector.detect(rgb[image]) == []
    assert tiled.detect(rgb[image]) == []


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("layout, width, height", [
    ([("astronaut", 300, 1740, 200)], 1920, 1080),  # landscape, near the right edge
    ([("grace_hopper", 200, 120, 940)], 1920, 1080),  # landscape, near the bottom-left corner
    ([("astronaut", 160, 450, 1080)], 600, 1200),  # portrait, near the bottom edge
    ([("grace_hopper", 180, 100, 120)], 600, 1200),  # portrait, near the top-left corner
])
def test_letterbox_maps_back_to_source_pixels(antialias, layout, width, height):
    from engine.faces.detector import FullRangeFaceDetector

    faces = FullRangeFaceDetector(antialias=antialias).detect(group_photo(layout, width, height))
    (_, size, cx, cy), = layout
    assert len(faces) == 1
    box = faces[0].box
    assert abs((box[0] + box[2]) / 2 - cx) < 0.1 * size and abs((box[1] + box[3]) / 2 - cy) < 0.1 * size, box
    assert 0.8 * size < faces[0].width < 1.2 * size


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("width, height", [(1920, 1080), (600, 1200), (192, 192), (100, 60), (150, 301)])
def test_letterbox_geometry(antialias, width, height):
    """A bright square lands where `Letterbox.to_source` says; padding is -1, values in [-1, 1]."""
    from engine.faces.detector import INPUT_SIZE, letterbox

    rgb = np.zeros((height, width, 3), np.uint8)
    side = max(4, min(width, height) // 5)
    x0, y0 = width * 2 // 3 - side // 2, height // 4
    rgb[y0:y0 + side, x0:x0 + side] = 255
    tensor, lb = letterbox(rgb, antialias)
    assert tensor.shape == (1, INPUT_SIZE, INPUT_SIZE, 3) and tensor.dtype == np.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    weight = (tensor[0, ..., 0] + 1.0) / 2.0
    ys, xs = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE]
    centroid = np.array([(weight * (xs + 0.5)).sum(), (weight * (ys + 0.5)).sum()]) / weight.sum() / INPUT_SIZE
    back = lb.to_source(centroid)
    tolerance = 0.75 / min(lb.scale_x, lb.scale_y)  # under one input pixel
    assert np.allclose(back, [x0 + side / 2, y0 + side / 2], atol=tolerance), (back, x0 + side / 2, y0 + side / 2)
    corners = lb.to_source(np.array([[0.0, 0.0], [1.0, 1.0]]))  # the input's corners: the padded square
    assert np.allclose(corners[1] - corners[0], max(width, height), rtol=0.02)
    if width != height:
        assert weight[0, 0] == 0.0 and weight[-1, -1] == 0.0


def test_anchor_decoding_and_weighted_suppression():
    from engine.faces.detector import NUM_BOXES, anchor_centres, decode, weighted_nms

    anchors = anchor_centres()
    assert anchors.shape == (NUM_BOXES, 2)
    assert np.allclose(anchors[0], [0.5 / 48, 0.5 / 48]) and np.allclose(anchors[49], [1.5 / 48, 1.5 / 48])
    raw = np.zeros((NUM_BOXES, 16), np.float32)
    logits = np.full(NUM_BOXES, -20.0, np.float32)
    k = 20 * 48 + 10  # row 20, column 10
    raw[k, :4] = [3.0, -6.0, 38.4, 19.2]  # dx, dy in input pixels; w, h
    raw[k, 4:6] = [-2.0, 1.0]
    logits[k] = 2.0
    coords, scores = decode(raw, logits, 0.5)
    cx, cy = (10.5 + 3 / 4) / 48, (20.5 - 6 / 4) / 48
    assert np.allclose(coords[0, :4], [cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05])
    assert np.allclose(coords[0, 4:6], [10.5 / 48 - 2 / 192, 20.5 / 48 + 1 / 192])
    assert scores == pytest.approx([1 / (1 + np.exp(-2.0))])
    assert len(decode(raw, logits, 0.9)[1]) == 0
    boxes = np.zeros((3, 16))
    boxes[:, :4] = [[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [5.0, 5.0, 6.0, 6.0]]
    boxes[:, 4] = [1.0, 2.0, 3.0]
    out, out_scores = weighted_nms(boxes, np.array([0.6, 0.9, 0.7]), 0.3)
    assert out_scores.tolist() == [0.9, 0.7]  # the cluster keeps its best score
    assert np.allclose(out[0, :5], (0.9 * boxes[1, :5] + 0.6 * boxes[0, :5]) / 1.5)
    assert np.allclose(out[1], boxes[2])


def test_deterministic_and_thread_safe(tiled):
    images = [portrait("astronaut"), portrait("grace_hopper"), group_photo()]
    single = [tiled.detect(rgb) for rgb in images]
    assert single == [tiled.detect(rgb) for rgb in images]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = [tiled.detect(rgb) for rgb in images[i % 2:] + images[:i % 2]]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == single
    assert results[1] == single[1:] + single[:1]
    assert all(f.score >= g.score for faces in single for f, g in zip(faces, faces[1:]))


def test_rejects_what_is_not_an_rgb_image(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((0, 64, 3), np.uint8))
