"""Label mapping and the output conventions every model backend shares.

A model names its outputs in its own words ("Happy", "happiness", "LABEL_3", "surprised"). The engine
compares classifiers on one canonical vocabulary (`engine.types.CANONICAL_EMOTIONS`), so every backend
maps its raw labels through `resolve_labels`:

1. a user-supplied `label_map` (raw label -> name) wins;
2. otherwise `canonical_emotion` (the engine's synonym table, extended here by `EXTRA_SYNONYMS`);
3. a label with no canonical counterpart keeps its own lower-case name: it is never dropped, so a
   FER+ "unknown" output or a custom class is still measured, under its own name.

`contempt` appears only where a model has it. Two raw labels that end on the same name are an error
(the outputs would be indistinguishable downstream); a `label_map` resolves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.types import EMOTION_SYNONYMS, canonical_emotion

#: Spellings seen in model cards and dataset files beyond the engine's own synonym table.
EXTRA_SYNONYMS: dict[str, str] = {
    "anger": "anger",
    "angry face": "anger",
    "disgusting": "disgust",
    "afraid": "fear",
    "happy face": "happiness",
    "happiness/joy": "happiness",
    "smile": "happiness",
    "sad face": "sadness",
    "surprize": "surprise",
    "suprise": "surprise",
    "neutrality": "neutral",
    "contemptuous": "contempt",
}

#: Output orders of common expression datasets, for models whose files only say "LABEL_0".."LABEL_k".
#: Use as `labels: fer2013` in a backend's config.
LABEL_SETS: dict[str, tuple[str, ...]] = {
    # FER2013 emotion ids 0..6 (Kaggle ICML 2013 challenge CSV).
    "fer2013": ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    # FER+ majority-vote columns (Barsoum et al. 2016).
    "ferplus": (
        "neutral",
        "happiness",
        "surprise",
        "sadness",
        "anger",
        "disgust",
        "fear",
        "contempt",
        "unknown",
        "not_face",
    ),
    # AffectNet expression ids 0..7 (Mollahosseini et al. 2017).
    "affectnet8": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"),
    "affectnet7": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"),
    # RAF-DB basic expression ids 1..7, zero-based.
    "rafdb": ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
    # CK+ emotion codes 1..7, zero-based.
    "ckplus": ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"),
}

def canonical_label(label: Any, label_map: Mapping[str, str] | None = None) -> str:
    """The canonical name of one raw label: `label_map` first, then the synonym tables, else itself.

    Args:
        label: a raw model label (non-strings such as integer ids are turned into strings).
        label_map: user overrides, raw label -> name. Matched exactly first, then case-insensitively;
            the name is itself mapped through the synonym tables ("Happy" -> "happiness").

    Returns:
        A canonical emotion, or the label's own stripped, lower-case name.
    """
    raw = str(label)
    if label_map:
        # The override's value is spelled freely too ("Happy"), so it goes through the tables below.
        if raw in label_map:
            return canonical_label(label_map[raw])
        folded = {str(k).strip().lower(): str(v) for k, v in label_map.items()}
        if raw.strip().lower() in folded:
            return canonical_label(folded[raw.strip().lower()])
    key = " ".join(raw.strip().lower().replace("_", " ").split())
    if key in EMOTION_SYNONYMS:
        return canonical_emotion(key)
    if key in EXTRA_SYNONYMS:
        return EXTRA_SYNONYMS[key]
    return canonical_emotion(raw)


def resolve_labels(
    raw_labels: Sequence[Any] | str,
    label_map: Mapping[str, str] | None = None,
    owner: str = "classifier",
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Map a model's output labels onto the canonical vocabulary.

    Args:
        raw_labels: the model's labels in output order, or the name of a `LABEL_SETS` entry.
        label_map: user overrides, raw label -> name (keys that match no raw label are an error,
            since a typo there would otherwise pass silently).
        owner: the classifier's name, for error messages.

    Returns:
        `(canonical labels, raw labels)`, both in output order.

    Raises:
        ValueError: on an empty label list, an unknown label set, a `label_map` key that matches no
            label, or two outputs that end on the same name.
    """
    if isinstance(raw_labels, str):
        if raw_labels not in LABEL_SETS:
            raise ValueError(
                f"{owner}.labels={raw_labels!r}: not a known label set; give a list of labels in output "
                f"order or one of {sorted(LABEL_SETS)}"
            )
        raw_labels = LABEL_SETS[raw_labels]
    raw = tuple(str(x) for x in raw_labels)
    if not raw:
        raise ValueError(f"{owner}.labels is empty; give the model's labels in output order")
    if label_map:
        known = {r.strip().lower() for r in raw}
        stray = [k for k in label_map if str(k).strip().lower() not in known]
        if stray:
            raise ValueError(f"{owner}.label_map keys {stray} match none of the model's labels {list(raw)}")
    mapped = tuple(canonical_label(r, label_map) for r in raw)
    seen: dict[str, str] = {}
    for r, m in zip(raw, mapped, strict=True):
        if m in seen:
            raise ValueError(
                f"{owner}: labels {seen[m]!r} and {r!r} both map to {m!r}; set {owner}.label_map to tell "
                "them apart"
            )
        seen[m] = r
    return mapped, raw
