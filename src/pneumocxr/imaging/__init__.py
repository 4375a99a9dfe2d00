"""The only place bytes become pixels: ``read_image`` for JPEG, PNG and DICOM."""
