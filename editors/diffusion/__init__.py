"""Diffusion editors: any diffusers pipeline, masked to the face and pasted back (see `editor`)."""

from editors.diffusion.editor import DiffusionEditor
from editors.diffusion.loading import DiffusionModelUnavailable
from editors.diffusion.modes import MODES, Mode

__all__ = ["MODES", "DiffusionEditor", "DiffusionModelUnavailable", "Mode"]
