"""The only place bytes become pixels: ``read_image`` for JPEG, PNG and DICOM.

Everything downstream (data transforms, caches, inference, serving) receives float32 H×W arrays in
[0, 1] from here, so a file reads the same way in training and in production. DICOM takes the
path of an 8-bit export (``imaging.dicom_pixels``), so a DICOM of a training JPEG's pixels reads
as exactly that JPEG; ``read_image_with_header`` also returns its ``DicomHeader``.
pydicom is imported only when a DICOM is read.
"""

from pneumocxr.imaging.dicom_header import DicomHeader, parse_age
from pneumocxr.imaging.read import ImageSource, image_info, read_image, read_image_with_header
from pneumocxr.imaging.resize import RESIZE_MODES, resize_square, square_uint8
from pneumocxr.imaging.source import MAX_PIXELS, ImageInfo

__all__ = [
    "MAX_PIXELS",
    "RESIZE_MODES",
    "DicomHeader",
    "ImageInfo",
    "ImageSource",
    "image_info",
    "parse_age",
    "read_image",
    "read_image_with_header",
    "resize_square",
    "square_uint8",
]
