"""What the report contains."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportConfig:
    """What the report contains.

    Args:
        gallery_max_images: faces shown in the gallery (the first ones of the dataset that had a face).
        thumb_size: gallery thumbnail side in pixels (images are inlined, so this sets the file size).
        top_k: predictions listed per classifier under each thumbnail.
        plots: write forest, heatmap and dose-response plots.
        thumbnails: side in pixels of a JPEG of every face's sham and strongest edit in `thumbs/`
            (what a study's gallery shows); 0 writes none.
    """

    gallery_max_images: int = 24
    thumb_size: int = 192
    top_k: int = 3
    plots: bool = True
    thumbnails: int = 0

    def __post_init__(self) -> None:
        if self.gallery_max_images < 0:
            raise ValueError(f"report.gallery_max_images must be >= 0, got {self.gallery_max_images}")
        if not 32 <= self.thumb_size <= 1024:
            raise ValueError(f"report.thumb_size must be in [32, 1024], got {self.thumb_size}")
        if self.thumbnails and not 32 <= self.thumbnails <= 1024:
            raise ValueError(f"report.thumbnails must be 0 or in [32, 1024], got {self.thumbnails}")
        if self.top_k < 1:
            raise ValueError(f"report.top_k must be >= 1, got {self.top_k}")
