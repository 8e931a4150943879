"""Facial symmetry: more (mirrored-average shape and texture) and less (a unilateral palsy-like droop)."""

from editors.symmetry.asymmetry import AsymmetryEditor
from editors.symmetry.editor import SymmetryEditor
from editors.symmetry.mirror import symmetric_target, symmetry_index

__all__ = ["AsymmetryEditor", "SymmetryEditor", "symmetric_target", "symmetry_index"]
