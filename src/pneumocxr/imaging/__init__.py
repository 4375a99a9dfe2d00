"""The only place bytes become pixels: ``read_image`` for JPEG, PNG and DICOM.

Everything downstream (data transforms, caches, inference, serving) receives float32 H×W arrays in
[0, 1] from here, so a file reads the same way in training and in production.
"""

from pneumocxr.imaging.read import image_info, read_image
from pneumocxr.imaging.resize import RESIZE_MODES, resize_square, square_uint8
from pneumocxr.imaging.source import MAX_PIXELS, ImageInfo

__all__ = [
    "MAX_PIXELS",
    "RESIZE_MODES",
    "ImageInfo",
    "image_info",
    "read_image",
    "resize_square",
    "square_uint8",
]
