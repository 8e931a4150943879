"""Sex-typical appearance: proportion warps from published anthropometry plus texture cues."""

from editors.gender.editor import GenderEditor

__all__ = ["GenderEditor"]
