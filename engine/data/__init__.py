"""Datasets: the demo set, image folders, CSV/Parquet manifests, FER2013 CSVs and synthetic faces."""

from engine.data.demo import DemoDataset
from engine.data.files import FER2013_LABELS, Fer2013Dataset, ImageFolderDataset, ManifestDataset
from engine.data.records import (
    IMAGE_EXTENSIONS,
    Dataset,
    ImageLoadError,
    ImageRecord,
    load_image_bytes,
    load_image_file,
    to_rgb_uint8,
)
from engine.data.synthetic import SyntheticFaceDataset

__all__ = [
    "FER2013_LABELS",
    "IMAGE_EXTENSIONS",
    "Dataset",
    "DemoDataset",
    "Fer2013Dataset",
    "ImageFolderDataset",
    "ImageLoadError",
    "ImageRecord",
    "ManifestDataset",
    "SyntheticFaceDataset",
    "load_image_bytes",
    "load_image_file",
    "to_rgb_uint8",
]
