"""Write `editors/data/face_mesh.json`: triangles, mirror pairs and landmark groups of the face mesh.

Run once (about half a minute on CPU): ``python scripts/make_mesh_data.py``. Sources:

* The canonical face mesh inside the `face_landmarker` asset (`geometry_pipeline_metadata_landmarks.binarypb`,
  a `Mesh3d` protobuf: 468 vertices of x, y, z, u, v and a triangle index buffer). It is the mesh the
  landmarks are regressed on, a single disc bounded by the face oval, with eyes and mouth closed over.
* MediaPipe's `FaceLandmarksConnections` for the named loops (face oval, eyes, brows, lips, irises, nose).
* Real faces for the iris mirror pairs and as a check of the rest: landmarks of `skimage.data.lfw_subset()`
  (first 100, upscaled to 128 px) and `skimage.data.astronaut()`, Procrustes-aligned and averaged; the mean
  shape is mirrored and matched to itself with the Hungarian algorithm.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.assets import asset_path  # noqa: E402
from engine.faces.landmarker import FaceLandmarker  # noqa: E402
from engine.faces.mesh import MESH_DATA_PATH  # noqa: E402

GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _protobuf_fields(buf: bytes) -> list[tuple[int, object]]:
    """Decode one protobuf message level into (field number, value); enough for Mesh3d."""
    fields, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 5:
            value = struct.unpack("<f", buf[pos : pos + 4])[0]
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type={wire} in {GEOMETRY_MEMBER}")
        fields.append((number, value))
    return fields


def canonical_mesh() -> tuple[np.ndarray, np.ndarray]:
    """(468, 3) canonical vertices and (898, 3) triangles from the face_landmarker asset."""
    with zipfile.ZipFile(asset_path("face_landmarker")) as bundle:
        metadata = bundle.read(GEOMETRY_MEMBER)
    mesh = dict(_protobuf_fields(metadata))[1]  # field 1: canonical_mesh
    mesh_fields = _protobuf_fields(mesh)
    vertex_buffer = np.array([v for n, v in mesh_fields if n == 3], dtype=np.float32).reshape(-1, 5)
    triangles = np.array([v for n, v in mesh_fields if n == 4], dtype=np.int64).reshape(-1, 3)
    return vertex_buffer[:, :3], triangles


def ordered_loop(connections) -> list[int]:
    """Walk a closed chain of connections into an ordered list of indices."""
    neighbours = defaultdict(list)
    for c in connections:
        neighbours[c.start].append(c.end)
        neighbours[c.end].append(c.start)
    if any(len(n) != 2 for n in neighbours.values()):
        raise RuntimeError("connections do not form one closed loop")
    start = min(neighbours)
    loop, previous = [start], neighbours[start][1]
    while True:
        current = loop[-1]
        nxt = neighbours[current][0] if neighbours[current][0] != previous else neighbours[current][1]
        if nxt == start:
            return loop
        previous = current
        loop.append(nxt)


def fan_eye(triangles: np.ndarray, eye_loop: list[int], centre: int) -> np.ndarray:
    """Replace the triangles that close an eye opening with a fan around the iris centre."""
    loop_set = set(eye_loop)
    inside = np.array([set(t.tolist()) <= loop_set for t in triangles])
    if inside.sum() != len(eye_loop) - 2:
        raise RuntimeError(f"eye opening has {inside.sum()} triangles, expected {len(eye_loop) - 2}")
    fan = [[centre, eye_loop[i], eye_loop[(i + 1) % len(eye_loop)]] for i in range(len(eye_loop))]
    return np.concatenate([triangles[~inside], np.array(fan, dtype=np.int64)])


def mirror_by_matching(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Partner of every point: Hungarian matching of the shape with its x-mirror, rigidly re-aligned.

    Returns the partner index array and the mean matched distance relative to the shape's width.
    """
    centred = points - points.mean(axis=0)
    mirrored = centred * np.array([-1.0] + [1.0] * (points.shape[1] - 1))
    aligned = mirrored
    for _ in range(4):
        cost = np.linalg.norm(centred[:, None, :] - aligned[None, :, :], axis=-1)
        rows, partner = linear_sum_assignment(cost)
        # The symmetry axis need not be x = 0: fit the rotation of the mirror onto its partners.
        u, _, vt = np.linalg.svd(mirrored[partner].T @ centred)
        aligned = mirrored @ (u @ vt)
    residual = float(cost[rows, partner].mean() / np.ptp(centred[:, 0]))
    return partner.astype(np.int64), residual


def procrustes_mean(shapes: list[np.ndarray], iterations: int = 5) -> np.ndarray:
    """Mean of 2-D shapes under similarity alignment (unit size, centred)."""

    def normalise(shape: np.ndarray) -> np.ndarray:
        centred = shape - shape.mean(axis=0)
        return centred / np.linalg.norm(centred)

    shapes = [normalise(s) for s in shapes]
    mean = shapes[0]
    for _ in range(iterations):
        aligned = []
        for s in shapes:
            u, _, vt = np.linalg.svd(s.T @ mean)
            aligned.append(s @ (u @ vt))
        mean = normalise(np.mean(aligned, axis=0))
    return mean


def demo_face_landmarks() -> list[np.ndarray]:
    import skimage.data
    from PIL import Image

    images = []
    for face in skimage.data.lfw_subset()[:100]:
        grey = Image.fromarray(np.round(face * 255).astype(np.uint8)).resize((128, 128), Image.BICUBIC)
        images.append(np.asarray(grey))
    images.append(skimage.data.astronaut())
    landmarker = FaceLandmarker(num_faces=1)
    try:
        found = [landmarker.detect(np.ascontiguousarray(np.stack([im] * 3, -1) if im.ndim == 2 else im))
                 for im in images]
    finally:
        landmarker.close()
    return [d["landmarks"] for d in found if d is not None]


def main() -> None:
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as conn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MESH_DATA_PATH)
    args = parser.parse_args()

    vertices, canon_triangles = canonical_mesh()
    loops = {
        "face_oval": ordered_loop(conn.FACE_LANDMARKS_FACE_OVAL),
        "left_eye": ordered_loop(conn.FACE_LANDMARKS_LEFT_EYE),
        "right_eye": ordered_loop(conn.FACE_LANDMARKS_RIGHT_EYE),
    }
    lips = conn.FACE_LANDMARKS_LIPS
    outer = {i for c in lips[:20] for i in (c.start, c.end)}
    loops["lips_outer"] = ordered_loop([c for c in lips if c.start in outer and c.end in outer])
    loops["lips_inner"] = ordered_loop([c for c in lips if c.start not in outer])

    triangles = fan_eye(canon_triangles, loops["right_eye"], 468)
    triangles = fan_eye(triangles, loops["left_eye"], 473)

    # Mirror pairs of the mesh from the exactly symmetric canonical face.
    canon_partner, canon_residual = mirror_by_matching(vertices.astype(np.float64))
    # Mirror pairs of all 478 points, irises included, from real faces.
    shapes = demo_face_landmarks()
    mean_shape = procrustes_mean([s[:, :2].astype(np.float64) for s in shapes])
    data_partner, data_residual = mirror_by_matching(mean_shape)
    mirror = data_partner.copy()
    mirror[:468] = canon_partner
    iris_ok = mirror[468] == 473 and set(mirror[469:473].tolist()) == set(range(474, 478))
    if not iris_ok or not np.array_equal(mirror[mirror], np.arange(478)):
        raise RuntimeError("mirror pairs are not a consistent involution; inspect the data")
    agreement = int((data_partner[:468] == canon_partner).sum())

    def unique(connections) -> list[int]:
        return sorted({i for c in connections for i in (c.start, c.end)})

    midline = [int(i) for i in np.flatnonzero(mirror == np.arange(478))]
    groups = {
        **loops,
        "left_eyebrow": unique(conn.FACE_LANDMARKS_LEFT_EYEBROW),
        "right_eyebrow": unique(conn.FACE_LANDMARKS_RIGHT_EYEBROW),
        "left_iris": [473, *unique(conn.FACE_LANDMARKS_LEFT_IRIS)],
        "right_iris": [468, *unique(conn.FACE_LANDMARKS_RIGHT_IRIS)],
        "lips": unique(lips),
        "nose": unique(conn.FACE_LANDMARKS_NOSE),
        "midline": midline,
        # Canonical x points to the subject's left.
        "left_side": [int(i) for i in range(468) if vertices[i, 0] > 1e-6] + list(range(473, 478)),
        "right_side": [int(i) for i in range(468) if vertices[i, 0] < -1e-6] + list(range(468, 473)),
    }
    # Check the triangulation keeps its orientation on real faces (no fold-overs in 2-D).
    signs = []
    for shape in shapes:
        a, b, c = (shape[triangles[:, k], :2] for k in range(3))
        cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        signs.append(np.sign(cross))
    signs = np.array(signs)
    majority = np.sign(signs.sum(axis=0) + 0.5)
    flipped_share = float((signs != majority).mean())

    note = (
        "Made by scripts/make_mesh_data.py. triangles: the canonical face mesh index buffer from the "
        "face_landmarker asset (geometry_pipeline_metadata_landmarks.binarypb, 898 triangles over 468 "
        "vertices, eyes and mouth closed over), with each eye opening re-triangulated as a fan around its "
        "iris centre (468 subject's right, 473 subject's left); iris ring points 469-472 and 474-477 are "
        "not vertices. mirror: landmarks 0-467 from Hungarian matching of the exactly symmetric canonical "
        "mesh with its x-mirror; irises from Hungarian matching of the Procrustes mean of "
        f"{len(shapes)} real frontal faces (skimage lfw_subset first 100 at 128 px, astronaut) with its "
        f"mirror, which agrees with the canonical pairs on {agreement}/468 points. groups: loops and sets "
        "from mediapipe FaceLandmarksConnections; midline = self-paired points; left/right = subject's."
    )
    payload = {
        "note": note,
        "checks": {
            "canonical_mirror_residual": round(canon_residual, 6),
            "data_mirror_residual": round(data_residual, 6),
            "data_vs_canonical_pair_agreement": agreement,
            "faces_used": len(shapes),
            "triangle_orientation_flip_share_on_faces": round(flipped_share, 5),
        },
        "triangles": triangles.tolist(),
        "mirror": mirror.tolist(),
        "groups": groups,
        "canonical_vertices": np.round(vertices, 5).tolist(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, separators=(",", ":")) + "\n", encoding="utf-8")
    print(json.dumps(payload["checks"], indent=1))
    print(f"wrote {args.out} with {len(triangles)} triangles")


if __name__ == "__main__":
    main()
