"""The face's own frame and head yaw, from the landmarks alone, shared by the procedural editors.

`face_frame` is the frame the editors measure proportions in (origin between the irises, IOD units);
`face_widths` the width they scale blurs and masks by.
Yaw serves cues drawn for a frontal view that must fade on turned faces.

MediaPipe's pose matrix is missing for some faces (found in tiles or re-detected in a margin), so yaw
comes from the mesh: the nose tip's offset between the two cheek extremes (234, 454) along the eye
line, r = (left - right) / (left + right), is `YAW_FROM_NOSE_OFFSET` x tan(yaw) (fitted on 44 demo
faces against MediaPipe's yaw: correlation 0.99).
"""

from __future__ import annotations

import torch

RIGHT_IRIS, LEFT_IRIS = 468, 473
#: Face-oval points beside the subject's right and left ear: their distance is "the face width".
FACE_EDGES = (234, 454)
#: The nose tip, and the outer eye corners (subject's right, left) that give the eye line.
NOSE_TIP, EYE_OUTER_CORNERS = 1, (33, 263)
#: |r| / tan(yaw) for the nose-offset yaw estimate of `yaw_degrees`.
YAW_FROM_NOSE_OFFSET = 1.72


def face_frame(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per face: centre `(N, 2)`, x axis `(N, 2)`, y axis `(N, 2)` (pointing down the face), IOD `(N,)`."""
    right, left = landmarks[:, RIGHT_IRIS, :2], landmarks[:, LEFT_IRIS, :2]
    axis = left - right
    iod = axis.norm(dim=-1).clamp(min=1e-6)
    ex = axis / iod[:, None]
    ey = torch.stack([-ex[:, 1], ex[:, 0]], dim=-1)
    return (left + right) / 2, ex, ey, iod


def face_widths(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` face width in its own pixels: the distance between the oval points beside the ears."""
    return (landmarks[:, FACE_EDGES[1], :2] - landmarks[:, FACE_EDGES[0], :2]).norm(dim=-1)


def yaw_degrees(landmarks: torch.Tensor) -> torch.Tensor:
    """Unsigned yaw `(N,)` in degrees of faces with `(N, 478, 2|3)` landmarks."""
    xy = landmarks[..., :2].float()
    eye = xy[:, EYE_OUTER_CORNERS[1]] - xy[:, EYE_OUTER_CORNERS[0]]
    ex = eye / eye.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    along = (xy * ex[:, None]).sum(-1)  # (N, 478) positions along the eye line
    nose = along[:, NOSE_TIP]
    right, left = nose - along[:, FACE_EDGES[0]], along[:, FACE_EDGES[1]] - nose
    r = (left - right) / (left + right).abs().clamp(min=1e-6)
    return torch.rad2deg(torch.atan(r.abs() / YAW_FROM_NOSE_OFFSET))


def fade_with_yaw(landmarks: torch.Tensor, start: float, gone: float) -> torch.Tensor:
    """`(N,)` 1 up to `start` degrees of yaw, falling linearly to 0 at `gone`."""
    return ((gone - yaw_degrees(landmarks)) / (gone - start)).clamp(0.0, 1.0)
