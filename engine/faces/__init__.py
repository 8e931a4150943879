"""Faces: detection and landmarks, the one aligner, face masks, the mesh topology, synthetic faces."""

from engine.faces.align import CropSpec, align_face, alignment_matrix, landmark_box
from engine.faces.analyzer import FaceAnalyzer, TemplateFaceAnalyzer
from engine.faces.landmarker import FaceLandmarker, blendshape_names
from engine.faces.masks import FACE_OVAL, face_masks

__all__ = [
    "FACE_OVAL",
    "CropSpec",
    "FaceAnalyzer",
    "FaceLandmarker",
    "TemplateFaceAnalyzer",
    "align_face",
    "alignment_matrix",
    "blendshape_names",
    "face_masks",
    "landmark_box",
]
