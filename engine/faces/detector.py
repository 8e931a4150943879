"""Full-range face detection: MediaPipe's BlazeFace full-range model, run with the LiteRT (TFLite) runtime.

The Face Landmarker's built-in detector is BlazeFace short-range (128x128 input), made for selfies:
it misses small faces and the faces of group photos. `FullRangeFaceDetector` runs the full-range
model (192x192 input, a 48x48 grid of anchors) with MediaPipe's own pre- and post-processing,
reimplemented in numpy from MediaPipe's graph configs and calculators:

* letterbox (`ImageToTensorCalculator`, `face_detection.pbtxt`): the whole image is scaled, aspect
  ratio kept, into the square input and padded with black (BORDER_ZERO) on both sides; pixel values
  go to [-1, 1]. By default a downscale averages areas where MediaPipe warps bilinearly (less
  aliasing: more small faces found in large photos); `antialias=False` is MediaPipe's warp.
* anchors (`SsdAnchorsCalculator`): one layer of stride 4 (48x48 = 2304 anchors), centres at
  (i + 0.5) / 48, fixed anchor size 1 (so min/max scale do not enter), no interpolated anchor.
* decoding (`TensorsToDetectionsCalculator`): 16 values per box, x/y/w/h order
  (reverse_output_order), then 6 keypoints (x, y); every value is divided by 192, positions are
  offset by the anchor centre; scores are clipped to +-100 and passed through a sigmoid.
* weighted non-maximum suppression (`NonMaxSuppressionCalculator`, WEIGHTED, IoU > 0.3): each
  cluster's box and keypoints are the score-weighted mean of its members; its score is the top one.

Detections come back in source pixels. On the whole image the model finds faces reliably from about
15 px of its input, 1/13 of the image's long side (about 100 px wide in a 1280x720 photo; some from
50 px); smaller ones need `tile`, which also runs it on overlapping tiles (faces from 25-40 px wide in
1280x720 with `tile=384`), at the cost of one inference per tile and a few more false detections of
face-like details at the smallest scale. Faces that fill the frame (tight crops) are mostly missed,
by MediaPipe's own pipeline too: the landmarker's short-range detector is the one for those.
`benchmarks/bench_detector.py` measures the sizes it finds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from engine.faces.landmarker import quiet_native_stderr

#: BlazeFace full-range ("sparse" weights) from the mediapipe 0.10.21 wheel (registered in engine.assets).
FULL_RANGE_ASSET = "face_detection_full_range"

# face_detection_full_range.pbtxt (FaceDetectionOptions) and face_detection.pbtxt (calculator options).
INPUT_SIZE = 192  # tensor_width, tensor_height
ANCHOR_STRIDE = 4  # num_layers: 1, strides: 4 -> a 48x48 grid
ANCHOR_OFFSET = 0.5  # anchor_offset_x, anchor_offset_y
NUM_BOXES = 2304  # num_boxes
NUM_COORDS = 16  # num_coords: box_coord_offset 0 (x, y, w, h), keypoint_coord_offset 4, 6 keypoints x (x, y)
KEYPOINT_OFFSET = 4
NUM_KEYPOINTS = 6
COORD_SCALE = 192.0  # x_scale, y_scale, w_scale, h_scale
SCORE_CLIP = 100.0  # score_clipping_thresh (then sigmoid_score)

#: MediaPipe's keypoint order (`FaceKeyPoint` of the face detection solution); "right" is the person's right.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One face: `box` (x0, y0, x1, y1) and `keypoints` (6, 2) in source pixels, `score` in (0, 1)."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaceDetection):
            return NotImplemented
        return (self.box == other.box and self.score == other.score
                and np.array_equal(self.keypoints, other.keypoints))

    def __hash__(self) -> int:
        return hash((self.box, self.score, self.keypoints.tobytes()))

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def eye_distance(self) -> float:
        """Distance between the two eye keypoints in pixels."""
        return float(np.hypot(*(self.keypoints[1] - self.keypoints[0])))


def anchor_centres() -> np.ndarray:
    """(2304, 2) anchor centres (x, y) in [0, 1], row by row as `SsdAnchorsCalculator` emits them.

    With `fixed_anchor_size` every anchor is 1 wide and 1 high, so decoding needs only the centres.
    """
    cells = INPUT_SIZE // ANCHOR_STRIDE
    centres = (np.arange(cells, dtype=np.float64) + ANCHOR_OFFSET) / cells
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


_ANCHORS = anchor_centres()


@dataclass(frozen=True)
class Letterbox:
    """Where a source image sits in the square input: per-axis scale and the padding before it (input px)."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) normalised input coordinates (0..1 across the input) to source pixels."""
        out = np.empty(np.shape(xy), dtype=np.float64)
        out[..., 0] = (xy[..., 0] * INPUT_SIZE - self.pad_x) / self.scale_x
        out[..., 1] = (xy[..., 1] * INPUT_SIZE - self.pad_y) / self.scale_y
        return out


def letterbox(rgb: np.ndarray, antialias: bool = True, size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """The model input (1, size, size, 3) float32 in [-1, 1] and the letterbox that made it.

    The image keeps its aspect ratio, is centred and padded with black (-1), as MediaPipe's
    `ImageToTensorCalculator` does with keep_aspect_ratio and BORDER_ZERO: the square of side
    max(H, W) around the image centre fills the input. With `antialias=False` the pixels are
    MediaPipe's too (one bilinear warp); with `antialias` a downscale averages areas instead
    (image resized to whole pixels, pasted at a whole-pixel offset), which finds more small faces
    in large photos.
    """
    h, w = rgb.shape[:2]
    fit = size / max(h, w)
    if antialias and fit < 1.0:
        new_w, new_h = max(1, round(w * fit)), max(1, round(h * fit))
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        lb = Letterbox(new_w / w, new_h / h, float(pad_x), float(pad_y))
    else:
        lb = Letterbox(fit, fit, (size - w * fit) / 2.0, (size - h * fit) / 2.0)
        m = np.array([[lb.scale_x, 0.0, lb.pad_x], [0.0, lb.scale_y, lb.pad_y]])
        canvas = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(0, 0, 0))
    tensor = canvas.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return tensor[None], lb


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Decode the model's raw outputs against the anchors.

    Args:
        raw_boxes: (2304, 16) regressions; raw_scores: (2304,) logits.
        min_score: keep detections scoring at least this (after the sigmoid).

    Returns:
        (coords (K, 16): x0, y0, x1, y1 then 6 keypoints (x, y), normalised input coordinates;
        scores (K,)), in anchor order.
    """
    raw = np.asarray(raw_boxes, dtype=np.float64).reshape(NUM_BOXES, NUM_COORDS)
    logits = np.clip(np.asarray(raw_scores, dtype=np.float64).reshape(NUM_BOXES), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    centre = raw[:, 0:2] / COORD_SCALE + _ANCHORS  # anchor w = h = 1
    half = raw[:, 2:4] / COORD_SCALE / 2.0
    keypoints = raw[:, KEYPOINT_OFFSET:].reshape(NUM_BOXES, NUM_KEYPOINTS, 2) / COORD_SCALE + _ANCHORS[:, None]
    coords = np.concatenate([centre - half, centre + half, keypoints.reshape(NUM_BOXES, -1)], axis=1)
    # MediaPipe drops boxes of negative or NaN size (b/171391719) along with those under the threshold.
    keep = (scores >= min_score) & np.all(half >= 0.0, axis=1)
    return coords[keep], scores[keep]


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) x0, y0, x1, y1 box with each of (N, 4) boxes (0 where the union is empty)."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(coords: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Repeatedly take the best remaining detection; every remaining one overlapping it by IoU > `threshold`
    (itself included) joins its cluster; the cluster's coordinates (box corners and keypoints) are the
    score-weighted mean of its members and its score is the best one's. Ties in score go by anchor order.
    """
    order = np.lexsort((np.arange(len(scores)), -scores))
    coords, scores = coords[order], scores[order]
    remaining = np.arange(len(scores))
    out_coords, out_scores = [], []
    while remaining.size:
        top = remaining[0]
        members = iou_one_to_many(coords[top, :4], coords[remaining, :4]) > threshold
        members[0] = True  # a degenerate (zero-area) box still forms its own cluster
        cluster = remaining[members]
        weights = scores[cluster]
        out_coords.append(weights @ coords[cluster] / weights.sum())
        out_scores.append(scores[top])
        remaining = remaining[~members]
    if not out_scores:
        return np.zeros((0, NUM_COORDS)), np.zeros(0)
    return np.stack(out_coords), np.array(out_scores)


#: Tiles overlap by a quarter of their side; a face within this fraction of an inner tile edge is left to
#: another tile or level.
TILE_OVERLAP = 0.25
TILE_EDGE_MARGIN = 0.01


def _starts(length: int, side: int) -> list[int]:
    """Offsets of tiles of `side` covering `length` with at least TILE_OVERLAP overlap, evenly spread."""
    if length <= side:
        return [0]
    step = side - int(side * TILE_OVERLAP)
    count = -(-(length - side) // step) + 1
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def tile_regions(width: int, height: int, tile: int | None) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) regions to run the model on: the whole image first, then square tiles of side
    `tile`, 2 `tile`, 4 `tile`... below the image's long side, each level overlapping by a quarter.

    The model finds faces down to about 1/13 of what it sees (15 px of its 192), and a tile keeps whole
    every face up to a quarter of its side, so successive levels cover every face size in between.
    """
    regions = [(0, 0, width, height)]
    side = tile or max(width, height)
    while side < max(width, height):
        for y in _starts(height, side):
            for x in _starts(width, side):
                regions.append((x, y, min(x + side, width), min(y + side, height)))
        side *= 2
    return regions


class FullRangeFaceDetector:
    """Finds every face, small ones and those of group photos included (one interpreter per thread).

    Args:
        min_score: detection threshold on the sigmoid score (MediaPipe's face detection solution's
            default `min_detection_confidence` is 0.5; its full-range graph alone says 0.6).
        nms_threshold: IoU above which detections merge (MediaPipe: 0.3).
        threads: LiteRT interpreter threads.
        antialias: downscale by area averaging (default); False letterboxes exactly as MediaPipe does
            (its bilinear warp), so that detections equal those of MediaPipe's own face detector.
        tile: None (default) runs the model once, on the whole image. A side in pixels also runs it
            on overlapping square tiles of that side, then of twice that side and so on (see
            `tile_regions`), and merges everything in one suppression: faces down to about a tenth
            of `tile` are found (384 for 40 px faces), at the cost of one inference per tile.
        model_path: the `.tflite` file; default: the `face_detection_full_range` asset.
    """

    def __init__(self, min_score: float = 0.5, nms_threshold: float = 0.3, threads: int = 1,
                 antialias: bool = True, tile: int | None = None, model_path: str | None = None) -> None:
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        if not 0.0 < nms_threshold < 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1), got {nms_threshold}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if tile is not None and tile < 64:
            raise ValueError(f"tile must be None or >= 64 px, got {tile}")
        if model_path is None:
            from engine.assets import asset_path

            model_path = str(asset_path(FULL_RANGE_ASSET))
        self.model_path = model_path
        self.min_score = min_score
        self.nms_threshold = nms_threshold
        self.threads = threads
        self.antialias = antialias
        self.tile = tile
        self._local = threading.local()

    def _interpreter(self) -> tuple[Any, int, int, int]:
        """This thread's interpreter and its input, boxes and scores tensor indices."""
        cached = getattr(self._local, "interpreter", None)
        if cached is None:
            from ai_edge_litert.interpreter import Interpreter

            with quiet_native_stderr():
                interpreter = Interpreter(model_path=self.model_path, num_threads=self.threads)
                interpreter.allocate_tensors()
            inp = interpreter.get_input_details()[0]["index"]
            dims = interpreter.get_tensor(inp).shape
            if dims != (1, INPUT_SIZE, INPUT_SIZE, 3):
                raise ValueError(f"{self.model_path}: input of {dims}, expected (1, 192, 192, 3)")
            # Two outputs, told apart by their last dimension: (1, 2304, 16) boxes, (1, 2304, 1) scores.
            indices = [d["index"] for d in interpreter.get_output_details()]
            outs = {interpreter.get_tensor(i).shape[-1]: i for i in indices}
            if set(outs) != {NUM_COORDS, 1}:
                raise ValueError(f"{self.model_path}: outputs {sorted(outs)} are not (16 coords, 1 score)")
            cached = (interpreter, inp, outs[NUM_COORDS], outs[1])
            self._local.interpreter = cached
        return cached

    def raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's raw (2304, 16) regressions and (2304,) score logits for one input tensor."""
        interpreter, inp, boxes, scores = self._interpreter()
        interpreter.set_tensor(inp, np.ascontiguousarray(tensor, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(boxes)[0].copy(), interpreter.get_tensor(scores)[0, :, 0].copy()

    def candidates(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decoded detections of one image before suppression: (K, 16) source-pixel coordinates, (K,) scores."""
        tensor, lb = letterbox(np.ascontiguousarray(rgb), self.antialias)
        coords, scores = decode(*self.raw(tensor), self.min_score)
        return lb.to_source(coords.reshape(len(coords), NUM_COORDS // 2, 2)).reshape(len(coords), NUM_COORDS), scores

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB uint8 (H, W, 3) image, by score (best first; ties left to right)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        all_coords, all_scores = [], []
        for x0, y0, x1, y1 in tile_regions(width, height, self.tile):
            coords, scores = self.candidates(rgb[y0:y1, x0:x1])
            coords[:, 0::2] += x0
            coords[:, 1::2] += y0
            if (x1 - x0, y1 - y0) != (width, height):  # a tile: drop faces cut by one of its inner edges
                margin = TILE_EDGE_MARGIN * max(x1 - x0, y1 - y0)
                keep = np.ones(len(scores), dtype=bool)
                for inner, axis, edge, sign in ((x0 > 0, 0, x0, 1), (y0 > 0, 1, y0, 1),
                                                (x1 < width, 2, x1, -1), (y1 < height, 3, y1, -1)):
                    if inner:
                        keep &= sign * (coords[:, axis] - edge) > margin
                coords, scores = coords[keep], scores[keep]
            all_coords.append(coords)
            all_scores.append(scores)
        # Suppression in source pixels: the letterbox scales both axes alike, so IoU and weighted means
        # are those MediaPipe computes in the input's normalised coordinates.
        coords, scores = weighted_nms(np.concatenate(all_coords), np.concatenate(all_scores), self.nms_threshold)
        faces = []
        for c, score in zip(coords, scores):
            kps = c[4:].reshape(NUM_KEYPOINTS, 2).astype(np.float32)
            kps.flags.writeable = False
            faces.append(FaceDetection((float(c[0]), float(c[1]), float(c[2]), float(c[3])), kps, float(score)))
        faces.sort(key=lambda f: (-f.score, f.box[0], f.box[1]))
        return faces
