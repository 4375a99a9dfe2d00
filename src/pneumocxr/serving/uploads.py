"""Reading one image from a request: multipart (field ``file``) or the raw body.

The declared type only decides how to read the body; what the bytes ARE is read from their content
by the core (``inference.inputs``), never trusted from a name or a header.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from pneumocxr.serving.errors import ApiError

RAW_TYPES = ("image/jpeg", "image/png", "application/dicom", "application/octet-stream")


async def read_image_body(request: Request) -> bytes:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing_file", "send the image as the multipart field 'file'")
        return await upload.read()
    if kind in RAW_TYPES:
        return await request.body()
    shown = kind or "no Content-Type"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"{shown} is not accepted; send image/jpeg, image/png or application/dicom "
        "(or the multipart field 'file')",
    )
