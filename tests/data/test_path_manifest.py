"""``read_path_manifest``: the files a ``predict --manifest`` CSV lists, or an error naming the row."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumocxr.data.image_files import read_path_manifest
from pneumocxr.errors import DatasetError


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    files = [tmp_path / "imgs" / name for name in ("b.png", "a.png", "sub/c.dcm")]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    return files


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_come_back_in_their_order_relative_to_the_manifest_folder(tmp_path, images):
    manifest = write(tmp_path / "m.csv", f"label,Path\n1,imgs/b.png\n0,imgs/a.png\n1,{images[2]}\n")
    assert read_path_manifest(manifest) == images


def test_a_manifest_without_a_path_column_names_the_file_and_its_header(tmp_path, images):
    manifest = write(tmp_path / "m.csv", "file,label\nimgs/a.png,0\n")
    with pytest.raises(DatasetError, match=r"m\.csv: no 'path' column in the header \['file', 'label'\]"):
        read_path_manifest(manifest)


def test_missing_files_empty_paths_and_repeats_are_named_by_line(tmp_path, images):
    manifest = write(tmp_path / "m.csv", 'path\nimgs/a.png\nimgs/gone.png\n""\nimgs/../imgs/a.png\n')
    with pytest.raises(DatasetError) as caught:
        read_path_manifest(manifest)
    message = str(caught.value)
    assert "m.csv: 3 bad row(s)" in message
    assert "line 3: file" in message and "gone.png not found" in message
    assert "line 4: empty path" in message
    assert "line 5:" in message and "already listed on line 2" in message


@pytest.mark.parametrize("text", ["path\n", ""])
def test_a_manifest_without_rows_or_header_is_refused(tmp_path, text):
    with pytest.raises(DatasetError, match=r"m\.csv"):
        read_path_manifest(write(tmp_path / "m.csv", text))


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.csv: cannot read the manifest"):
        read_path_manifest(tmp_path / "nope.csv")
