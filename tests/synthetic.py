"""Seeded synthetic measurement tables with planted effects, for the statistics tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

DEFAULT_OUTPUTS = ("anger", "happiness", "neutral", "sadness")


def synthetic_measurements(
    n_images: int = 40,
    classifiers: Sequence[str] = ("clf_a", "clf_b"),
    outputs: Sequence[str] = DEFAULT_OUTPUTS,
    strengths: Sequence[float] = (0.5, 1.0),
    properties: Mapping[str, str] | None = None,
    shift: Mapping[tuple[str, str], float] | None = None,
    artefact_shift: float = 0.0,
    noise: float = 0.05,
    seed: int = 0,
    with_original: bool = True,
    subjects_per_image: int = 1,
) -> pd.DataFrame:
    """A tidy measurements table (see ``engine.stats.pairing.REQUIRED_COLUMNS``).

    Each image has a base score per classifier x output; the sham adds ``artefact_shift`` to every
    output, and an edit of strength s adds ``shift[(classifier, output)] * s`` on top of the sham, plus
    independent noise of sd ``noise`` per condition. ``top1`` is the argmax over outputs.

    Args:
        properties: editor name -> property name (default one editor ``warp`` of property ``age``).
        shift: planted effect per unit strength for (classifier, output); missing pairs have none.
        subjects_per_image: >1 groups consecutive images into subjects of that size.
    """
    rng = np.random.default_rng(seed)
    properties = dict(properties or {"warp": "age"})
    shift = dict(shift or {})
    n_c, n_o = len(classifiers), len(outputs)
    base = rng.normal(0.0, 1.0, (n_images, n_c, n_o))
    frames = []
    image_ids = np.array([f"img{i:04d}" for i in range(n_images)])
    subjects = np.array([f"s{i // subjects_per_image:04d}" for i in range(n_images)])
    gender = np.where(rng.random(n_images) < 0.5, "female", "male")
    age = rng.uniform(18, 80, n_images).round(1)
    planted = np.array([[shift.get((c, o), 0.0) for o in outputs] for c in classifiers])

    def emit(condition: str, strength: float, values: np.ndarray, editor: str, prop: str) -> None:
        top = np.asarray(outputs)[values.argmax(axis=2)]  # (n_images, n_c)
        idx_i, idx_c, idx_o = np.meshgrid(np.arange(n_images), np.arange(n_c), np.arange(n_o), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "image_id": image_ids[idx_i.ravel()],
                    "subject": subjects[idx_i.ravel()],
                    "label": "neutral",
                    "condition": condition,
                    "strength": strength,
                    "editor": editor,
                    "property": prop,
                    "classifier": np.asarray(classifiers)[idx_c.ravel()],
                    "output": np.asarray(outputs)[idx_o.ravel()],
                    "value": values.ravel(),
                    "top1": top[idx_i.ravel(), idx_c.ravel()],
                    "est_gender": gender[idx_i.ravel()],
                    "est_age": age[idx_i.ravel()],
                }
            )
        )

    for editor, prop in properties.items():
        if with_original:
            emit("original", np.nan, base + rng.normal(0, noise, base.shape), editor, prop)
        sham = base + artefact_shift
        emit("sham", 0.0, sham + rng.normal(0, noise, base.shape), editor, prop)
        for s in strengths:
            emit("edit", float(s), sham + planted[None] * s + rng.normal(0, noise, base.shape), editor, prop)
    return pd.concat(frames, ignore_index=True)
