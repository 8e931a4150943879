"""Tests of the sEMG electrode overlay editor (published site tables, geometry, rendering contract)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from editors.electrodes import DATA_DIR, ElectrodeEditor, load_site_table
from engine.faces.masks import FACE_OVAL
from engine.types import FaceBatch, stable_hash

SIZE = 256


# --- real faces ------------------------------------------------------------------------------------------


def _landmarker():
    from mediapipe.tasks.python import BaseOptions, vision

    import engine.assets

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(engine.assets.asset_path("face_landmarker"))),
        output_face_blendshapes=True,
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
    )
    return vision.FaceLandmarker.create_from_options(options)


def _detect(landmarker, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import mediapipe as mp

    h, w = rgb.shape[:2]
    found = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
    points = np.array([[p.x * w, p.y * h, p.z * w] for p in found.face_landmarks[0]], np.float32)
    return points, np.array([c.score for c in found.face_blendshapes[0]], np.float32)


def _face_crop(landmarker, rgb: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square crop with the inter-ocular distance ~0.3 of its side, landmarks re-detected on it."""
    from PIL import Image

    points, _ = _detect(landmarker, rgb)
    eyes = points[[33, 133], :2].mean(0), points[[362, 263], :2].mean(0)
    side = np.linalg.norm(eyes[0] - eyes[1]) / 0.3
    cx, cy = (points[:, :2].min(0) + points[:, :2].max(0)) / 2
    box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    crop = np.array(Image.fromarray(rgb).crop(box).resize((size, size), Image.LANCZOS))
    points, blendshapes = _detect(landmarker, crop)
    return crop, points, blendshapes


def _batch(images: torch.Tensor, landmarks: torch.Tensor, ids: list[str] | None = None) -> FaceBatch:
    from PIL import Image, ImageDraw

    n, _, h, w = images.shape
    masks = []
    for lm in landmarks.numpy():
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon([tuple(map(float, lm[i, :2])) for i in FACE_OVAL], fill=255)
        masks.append(torch.from_numpy(np.array(canvas)).float()[None] / 255)
    boxes = torch.cat([landmarks[..., :2].amin(1), landmarks[..., :2].amax(1)], -1)
    return FaceBatch(
        ids=ids or [f"face{i}" for i in range(n)],
        images=images,
        landmarks=landmarks,
        blendshapes=torch.zeros(n, 52),
        boxes=boxes,
        face_mask=torch.stack(masks),
        pose=torch.zeros(n, 3),
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CPU cores are shared: one torch thread is faster than two fighting over them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def faces() -> FaceBatch:
    """The astronaut and Grace Hopper, aligned 256-px crops with MediaPipe landmarks."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    sources = {
        "astronaut": skimage.data.astronaut(),
        "grace_hopper": np.array(
            Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
        ),
    }
    landmarker = _landmarker()
    crops, points = [], []
    for rgb in sources.values():
        crop, lm, _ = _face_crop(landmarker, rgb, SIZE)
        crops.append(torch.from_numpy(crop).permute(2, 0, 1).float() / 255)
        points.append(torch.from_numpy(lm))
    landmarker.close()
    return _batch(torch.stack(crops), torch.stack(points), list(sources))


# --- the published tables --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "count", "author"), [("fridlund_cacioppo", 22, "Fridlund"), ("kuramoto", 19, "Kuramoto")]
)
def test_scheme_tables_have_the_published_site_counts_and_sources(
    scheme: str, count: int, author: str
) -> None:
    rows = load_site_table(scheme)
    assert len(rows) == count == len(ElectrodeEditor(scheme=scheme).site_ids())
    assert len({r["site_id"] for r in rows}) == count
    for r in rows:
        assert author in r["source"] and "doi:" in r["source"]
        weights = [r["w_a"], r["w_b"], r["w_c"]]
        assert abs(sum(weights) - 1) < 1e-3 and min(weights) > -1e-3
        assert max(r["tri_a"], r["tri_b"], r["tri_c"], *r["ring"]) < 468
        assert abs(sum(r["ring_du"])) < 1e-3 and abs(sum(r["ring_dv"])) < 1e-3
        assert -90 <= r["fibre_angle_deg"] < 90
    sided = [r for r in rows if r["side"] != "midline"]
    left = {r["muscle"] for r in sided if r["side"] == "left"}
    assert left == {r["muscle"] for r in sided if r["side"] == "right"}  # bilateral
    if scheme == "fridlund_cacioppo":  # 10 facial muscles + masseter, both sides, all bipolar
        assert len(left) == 11 and "masseter" in left and "zygomaticus_major" in left
        assert {r["montage"] for r in rows} == {"bipolar"}
    else:  # 8 bilateral grid positions + 3 on the midline, monopolar
        assert len(left) == 8 and len(rows) - len(sided) == 3


def test_mirror_sites_are_mirror_images_on_the_canvas() -> None:
    rows = {r["site_id"]: r for r in load_site_table("fridlund_cacioppo")}
    for k in range(1, 23, 2):
        right, left = rows[f"F{k}"], rows[f"F{k + 1}"]
        assert (right["side"], left["side"]) == ("right", "left")
        assert float(right["canvas_x"]) == -float(left["canvas_x"]) < 0
        assert right["canvas_y"] == left["canvas_y"]
        assert (
            math.isclose(right["fibre_angle_deg"], -left["fibre_angle_deg"], abs_tol=1e-9)
            or abs(left["fibre_angle_deg"]) == 90
        )


# --- contract: sham, mask, determinism, batching ---------------------------------------------------------


def test_strength_zero_is_the_sham_and_returns_the_input_unchanged(faces: FaceBatch) -> None:
    editor = ElectrodeEditor()
    zero, sham = editor.edit(faces, 0.0, seed=1), editor.sham(faces, seed=1)
    assert torch.equal(zero.images, faces.images) and torch.equal(sham.images, faces.images)
    assert zero.mask.sum() == 0
    assert [m["sites_drawn"] for m in zero.metadata] == [0, 0]
    assert [m["sites_placed"] for m in zero.metadata] == [22, 22]  # same geometry, just invisible


@pytest.mark.parametrize("strength", [0.35, 1.0])
def test_pixels_outside_the_mask_are_bit_identical(faces: FaceBatch, strength: float) -> None:
    result = ElectrodeEditor(scheme="kuramoto", bipolar=True).edit(faces, strength, seed=0)
    outside = (result.mask == 0).expand_as(faces.images)
    assert torch.equal(result.images[outside], faces.images[outside])
    changed = (result.images != faces.images).any(1, keepdim=True)
    assert bool((result.mask[changed] == 1).all())
    assert 0.02 < result.mask.mean() < 0.4
    assert result.images.min() >= 0 and result.images.max() <= 1


def test_opacity_scales_the_change(faces: FaceBatch) -> None:
    editor = ElectrodeEditor(sites=["F19", "F20"], wires=False)
    weak, strong = (editor.edit(faces, s, seed=0) for s in (0.3, 1.0))
    assert torch.equal(weak.mask, strong.mask)
    d_weak = (weak.images - faces.images).abs().sum()
    d_strong = (strong.images - faces.images).abs().sum()
    assert 0.2 < d_weak / d_strong < 0.4


def test_deterministic_and_batch_equals_one_by_one(faces: FaceBatch) -> None:
    editor = ElectrodeEditor(scheme="fridlund_cacioppo")
    batch = editor.edit(faces, 0.8, seed=7)
    again = editor.edit(faces, 0.8, seed=7)
    assert torch.equal(batch.images, again.images)
    for i in range(len(faces)):
        single = editor.edit(faces.select([i]), 0.8, seed=7)
        assert torch.equal(single.images[0], batch.images[i])
        assert torch.equal(single.mask[0], batch.mask[i])
        assert single.metadata[0] == batch.metadata[i]


def test_seed_changes_only_the_texture_inside_the_mask(faces: FaceBatch) -> None:
    editor = ElectrodeEditor(scheme="kuramoto")
    a, b = editor.edit(faces, 1.0, seed=1), editor.edit(faces, 1.0, seed=2)
    assert torch.equal(a.mask, b.mask)
    differ = (a.images != b.images).any(1, keepdim=True)
    assert differ.any() and bool((a.mask[differ] == 1).all())
    assert (a.images - b.images).abs().max() < 0.25  # grain, not a different drawing


# --- placement on real faces ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["fridlund_cacioppo", "kuramoto"])
def test_all_sites_drawn_inside_the_face_on_real_faces(faces: FaceBatch, scheme: str) -> None:
    editor = ElectrodeEditor(scheme=scheme)
    result = editor.edit(faces, 1.0, seed=0)
    n_sites = len(editor.site_ids())
    for meta in result.metadata:
        assert meta["sites_requested"] == meta["sites_drawn"] == n_sites and meta["sites_not_drawn"] == ""
        assert all(meta["site_drawn"])
        assert 0.2 < meta["px_per_mm"] * 63.0 / SIZE < 0.4  # crops have an inter-ocular distance ~0.3 * size
        assert meta["max_site_shift_mm"] < 4.0
    # a monopolar electrode sits on its site: the pixel at each site centre is covered
    layout = editor.layout(faces.landmarks)
    if scheme == "kuramoto":
        x, y = layout.site_centre[..., 0].long(), layout.site_centre[..., 1].long()
        for i in range(len(faces)):
            assert bool((result.mask[i, 0, y[i], x[i]] == 1).all())


def test_sites_sit_on_the_right_anatomy(faces: FaceBatch) -> None:
    editor = ElectrodeEditor(bipolar=False)
    ids = editor.site_ids()
    centre = editor.layout(faces.landmarks).site_centre[..., :2]
    lm = faces.landmarks[..., :2]

    def site(name: str) -> torch.Tensor:
        return centre[:, ids.index(name)]

    brow_top_y = lm[:, [105, 334], 1].mean(1)
    eye_y = lm[:, [33, 133, 362, 263], 1].mean(1)
    mouth_corner = lm[:, [61, 291]]
    lower_lip_y = lm[:, 17, 1]
    nose_x = lm[:, 1, 0]
    for k in (1, 2, 3, 4):  # frontalis above the brows
        assert bool((site(f"F{k}")[:, 1] < brow_top_y).all())
    assert bool((site("F17")[:, 1] > eye_y).all() and (site("F17")[:, 1] < lm[:, 1, 1]).all())  # below eye
    for k, corner in ((19, 0), (20, 1)):  # zygomaticus: above and lateral to its mouth corner
        assert bool((site(f"F{k}")[:, 1] < mouth_corner[:, corner, 1]).all())
        assert bool(
            ((site(f"F{k}")[:, 0] - nose_x).abs() > (mouth_corner[:, corner, 0] - nose_x).abs()).all()
        )
    for k in (13, 14, 15, 16):  # depressor anguli oris and mentalis below the lower lip
        assert bool((site(f"F{k}")[:, 1] > lower_lip_y).all())
    # the subject's left is on the image right of a frontal photo
    for k in range(1, 23, 2):
        assert bool((site(f"F{k}")[:, 0] < nose_x).all() and (site(f"F{k + 1}")[:, 0] > nose_x).all())


def test_bipolar_pairs_are_one_centimetre_apart_along_the_fibres(faces: FaceBatch) -> None:
    editor = ElectrodeEditor(sites=["F1", "F11", "F19"], bipolar=True)
    layout = editor.layout(faces.landmarks)
    pairs = layout.centres.view(len(faces), 3, 2, 3)
    gap_mm = (pairs[:, :, 0] - pairs[:, :, 1]).norm(dim=-1) / layout.px_per_mm[:, None]
    assert torch.allclose(gap_mm, torch.full_like(gap_mm, 10.0), atol=1e-3)
    axis = pairs[:, :, 0, :2] - pairs[:, :, 1, :2]
    vertical = axis[..., 1].abs() / axis[..., :2].norm(dim=-1)
    assert bool((vertical[:, 0] > 0.9).all())  # frontalis: vertical fibres
    assert bool((vertical[:, 1] < 0.5).all())  # orbicularis oris: along the lip (which curves in a smile)
    assert bool(((vertical[:, 2] > 0.3) & (vertical[:, 2] < 0.85)).all())  # zygomaticus: oblique


def test_placement_follows_pose_and_foreshortens(faces: FaceBatch) -> None:
    base = faces.select([0])
    lm = base.landmarks.clone()
    # an in-plane move of the head moves every site with it
    editor = ElectrodeEditor(scheme="kuramoto")
    moved = lm + torch.tensor([9.0, -4.0, 0.0])
    shift = editor.layout(moved).site_centre - editor.layout(lm).site_centre
    assert torch.allclose(shift, torch.tensor([9.0, -4.0, 0.0]).expand_as(shift), atol=1e-3)

    def turned(yaw_degrees: float) -> torch.Tensor:
        pivot = lm[0].mean(0)
        c, s = math.cos(math.radians(yaw_degrees)), math.sin(math.radians(yaw_degrees))
        rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        return ((lm - pivot) @ rot.T) + pivot

    # turning the subject's left cheek away squashes its electrode into a narrower ellipse
    single = ElectrodeEditor(sites=["F10"], bipolar=False, wires=False, shadow=False)
    area = []
    for yaw in (0.0, -30.0):
        result = single.edit(_batch(base.images, turned(yaw)), 1.0, seed=0)
        assert result.metadata[0]["sites_drawn"] == 1
        area.append(float(result.mask.sum()))
    assert area[1] < 0.75 * area[0]
    # far enough round, the far-side masseter is hidden, the near side still drawn
    masseter = ElectrodeEditor(sites=[("masseter", "both")], wires=False)
    assert masseter.layout(turned(-60.0)).facing.tolist() == [[True, True, False, False]]
    meta = masseter.edit(_batch(base.images, turned(-60.0)), 1.0, seed=0).metadata[0]  # reported by id, and
    assert meta["sites_not_drawn"] == "F22" and not masseter.audit_policy().target.reached(meta)  # fails


def test_visibility_rule_outline_tolerance_and_facing(faces: FaceBatch) -> None:
    """Hidden when facing away, or edge-on and beyond OUTLINE_TOLERANCE pad radii outside the outline."""
    from editors.electrodes.editor import EDGE_ON, MIN_FACING, OUTLINE_TOLERANCE

    lm = faces.landmarks[:1]
    oval = lm[0, list(FACE_OVAL), :2]
    edge = oval[oval[:, 0].argmin()]  # the outline's leftmost point: outward is -x
    points = torch.stack([edge + torch.tensor([dx * OUTLINE_TOLERANCE * 10.0, 0.0]) for dx in (1.0, -0.8, -1.5)])

    def seen(normal_z: float) -> list[bool]:
        normals = torch.tensor([0.0, 0.0, normal_z]).expand(1, 3, 3)
        return ElectrodeEditor.visible(points[None], normals, lm, torch.tensor([10.0]))[0].tolist()

    assert seen(-0.5 * EDGE_ON) == seen(0.5 * MIN_FACING) == [True, True, False]  # edge-on: the outline decides
    assert seen(-2 * EDGE_ON) == [True] * 3 and seen(2 * MIN_FACING) == [False] * 3  # facing / turned away


# --- options ------------------------------------------------------------------------------------------------


def test_site_subset_and_muscle_side_list(faces: FaceBatch) -> None:
    by_id = ElectrodeEditor(sites=["F19", "f20"])
    by_muscle = ElectrodeEditor(sites=[("Zygomaticus major", "both")])
    assert by_id.site_ids() == by_muscle.site_ids() == ["F19", "F20"]
    custom = ElectrodeEditor(
        scheme="custom", sites=[("masseter", "left"), ("procerus_nasal_bridge", "midline")]
    )
    assert custom.site_ids() == ["F22", "K24"]
    result = custom.edit(faces, 1.0, seed=0)
    assert [m["sites_drawn"] for m in result.metadata] == [2, 2]
    assert [m["electrodes_drawn"] for m in result.metadata] == [3, 3]  # F22 bipolar + K24 monopolar
    full = ElectrodeEditor().edit(faces, 1.0, seed=0)
    assert result.mask.sum() < 0.3 * full.mask.sum()


def test_wires_run_off_the_face(faces: FaceBatch) -> None:
    with_wires = ElectrodeEditor(scheme="kuramoto").edit(faces, 1.0, seed=0)
    without = ElectrodeEditor(scheme="kuramoto", wires=False).edit(faces, 1.0, seed=0)
    outside_face = faces.face_mask < 0.5
    assert without.mask[outside_face].mean() < 0.01
    assert with_wires.mask[outside_face].mean() > 5 * without.mask[outside_face].mean()
    # wires are thin and dark: well below the pads' brightness
    wire_only = (with_wires.mask == 1) & (without.mask == 0) & outside_face
    assert with_wires.images.mean(1, keepdim=True)[wire_only].min() < 0.2


def test_user_table(tmp_path, faces: FaceBatch) -> None:
    source = load_site_table("kuramoto")
    path = tmp_path / "sites.csv"
    with open(DATA_DIR / "electrode_sites_kuramoto.csv") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    header = next(csv.reader([lines[0]]))
    path.write_text("# my two sites\n" + lines[0] + "".join(lines[1:3]))
    editor = ElectrodeEditor(table=str(path))
    assert editor.scheme == "custom" and editor.site_ids() == [r["site_id"] for r in source[:2]]
    assert "ring_du" in header
    assert [m["sites_drawn"] for m in editor.edit(faces, 1.0, seed=0).metadata] == [2, 2]
    path.write_text(lines[0] + lines[1].replace(",top,", ",bottom,"))
    with pytest.raises(ValueError, match=r"wire_exit='bottom'.*top"):
        ElectrodeEditor(table=str(path))
    path.write_text("site_id,muscle\nX1,frontalis\n")
    with pytest.raises(ValueError, match=r"missing \['side'"):
        ElectrodeEditor(table=str(path))


def test_fingerprint_is_json_and_changes_with_options() -> None:
    a = ElectrodeEditor(sites=[("mentalis", "left")])
    b = ElectrodeEditor(sites=[("mentalis", "right")])
    json.dumps(a.fingerprint())
    assert stable_hash(a.fingerprint()) != stable_hash(b.fingerprint())
    assert stable_hash(a.fingerprint()) == stable_hash(
        ElectrodeEditor(sites=[("mentalis", "left")]).fingerprint()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "davis"}, r"scheme='davis'.*fridlund_cacioppo, kuramoto, custom"),
        ({"sites": ["F99"]}, r"sites='F99'.*F1"),
        ({"sites": [("nasalis", "left")]}, r"sites=\('nasalis', 'left'\).*zygomaticus_major"),
        ({"sites": [("mentalis", "top")]}, r"side='top'.*both"),
        ({"sites": []}, r"sites=\[\]"),
        ({"scheme": "custom"}, r"sites=None with scheme='custom'"),
        ({"diameter_mm": -1.0}, r"diameter_mm=-1.0"),
        ({"gel_diameter_mm": 12.0}, r"gel_diameter_mm=12.0.*diameter_mm=10.0"),
        ({"bipolar": "yes"}, r"bipolar='yes'"),
        ({"table": "/nonexistent.csv"}, r"table='/nonexistent.csv'"),
    ],
)
def test_invalid_options_raise_naming_field_and_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ElectrodeEditor(**kwargs)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "1"])
def test_invalid_strength_raises(faces: FaceBatch, strength) -> None:
    with pytest.raises(ValueError, match="strength="):
        ElectrodeEditor(sites=["F1"]).edit(faces, strength, seed=0)

