"""Which sex each face is pushed toward, which faces get the adult-only cues, and how the audit sees that
the sex moved: shared by every gender editor."""

from __future__ import annotations

from engine.types import FaceBatch, TargetCheck

TARGETS = ("male", "female", "opposite")
#: `adult_cues`: draw beard shadow and cosmetics on every face (on), on none (off), or on every face
#: whose metadata does not mark it as a child's (auto).
ADULT_CUES = ("auto", "on", "off")
#: Below this age (years, metadata "age") a face is a child's: no beard grows, and make-up is no
#: sex-typical trait of a child's face.
ADULT_AGE = 16
CHILD_GROUPS = {"child", "children", "kid", "baby", "infant", "toddler"}
FEMALE_WORDS = {"f", "female", "woman", "w", "girl"}
MALE_WORDS = {"m", "male", "man", "boy"}
_SIGNS = (("male", 1), ("female", -1))


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"editor.target={target!r} must be one of {TARGETS}")
    return target


def face_metadata(batch: FaceBatch) -> list[dict]:
    """Each face's record metadata ({} where a batch carries none)."""
    return [batch.metadata[i] if i < len(batch.metadata) else {} for i in range(len(batch))]


def face_targets(batch: FaceBatch, target: str, metadata_key: str) -> list[str]:
    """The target sex of every face: `target`, or the opposite of each face's metadata (never a guess)."""
    if target != "opposite":
        return [target] * len(batch)
    out = []
    for image_id, meta in zip(batch.ids, face_metadata(batch), strict=True):
        value = str(meta.get(metadata_key, "")).strip().lower()
        if value in FEMALE_WORDS:
            out.append("male")
        elif value in MALE_WORDS:
            out.append("female")
        else:
            raise ValueError(
                f"editor.target='opposite' needs metadata[{metadata_key!r}] in "
                f"{sorted(FEMALE_WORDS | MALE_WORDS)}; image_id={image_id!r} has {meta.get(metadata_key)!r}"
            )
    return out


def check_adult_cues(mode: str) -> str:
    if mode not in ADULT_CUES:
        raise ValueError(f"editor.adult_cues={mode!r} must be one of {ADULT_CUES}")
    return mode


def is_child(meta: dict) -> bool:
    """Whether a record's metadata marks a child's face: `age` below `ADULT_AGE`, or an `age_group` such
    as "child". No such metadata: not a child (the editor never guesses an age from the face)."""
    group = str(meta.get("age_group", "")).strip().lower()
    if group in CHILD_GROUPS:
        return True
    try:
        return float(meta.get("age")) < ADULT_AGE
    except (TypeError, ValueError):
        return False


def adult_cue_faces(batch: FaceBatch, mode: str) -> list[bool]:
    """Per face: whether the adult-only cues (beard shadow; lash line, eyeshadow, lip colour) are drawn."""
    if mode != "auto":
        return [mode == "on"] * len(batch)
    return [not is_child(meta) for meta in face_metadata(batch)]


def gender_target_check(target: str) -> TargetCheck:
    """P(male) must rise toward male and fall toward female, by `min_p_target_change`.

    With target "opposite" each face's direction is the `target` it reports in its edit metadata.
    """
    if target == "opposite":
        return TargetCheck(("delta_est_p_male",), "min_p_target_change", sign_key="target", signs=_SIGNS)
    return TargetCheck(("delta_est_p_male",), "min_p_target_change", dict(_SIGNS)[target])
