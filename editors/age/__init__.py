"""Perceived age: mesh-following folds shaded in a shape-free template, skin tone and texture, sagging."""

from editors.age.editor import AgeEditor

__all__ = ["AgeEditor"]
