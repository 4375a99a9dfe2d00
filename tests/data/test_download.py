"""``pneumocxr data download`` against a loopback HTTP server that can misbehave on purpose."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from pneumocxr.cli.main import main
from pneumocxr.data.download import (
    ARCHIVE_NAME,
    download_dataset,
    extract,
    fetch,
    read_record,
    record_path,
    verify,
)
from pneumocxr.errors import DownloadError

SPLITS = ("train", "val", "test")
CLASSES = ("NORMAL", "PNEUMONIA")


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 12), color=40 + 20 * seed).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_release_zip(path: Path, *, nested: bool = True, splits: tuple[str, ...] = SPLITS) -> Path:
    """A tiny zip with the real release's quirks: duplicated nesting, __MACOSX/ forks, .DS_Store."""
    top = "chest_xray/chest_xray/" if nested else "chest_xray/"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(top, b"")
        zf.writestr(f"{top}.DS_Store", b"\0\0\0\1Bud1")
        for i, split in enumerate(splits):
            for j, label in enumerate(CLASSES):
                name = f"{top}{split}/{label}/img{i}{j}.jpeg"
                zf.writestr(name, _jpeg(2 * i + j))
                zf.writestr(f"{top}{split}/{label}/.DS_Store", b"junk")
                zf.writestr(f"__MACOSX/{top}{split}/{label}/._img{i}{j}.jpeg", b"\0\5\26\7 fork")
    return path


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; the requests' Range headers are recorded."""

    payload: bytes = b""
    cut_after: int | None = None  # send only this many body bytes, then drop the connection
    ignore_range: bool = False  # answer 200 with the whole body even to a Range request
    not_found: bool = False
    ranges: list[str | None] = field(default_factory=list)


def _handler_for(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            if state.not_found:
                self.send_error(404, "Not Found")
                return
            data, start = state.payload, 0
            if rng and not state.ignore_range:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                self.wfile.write(body[: state.cut_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def release(tmp_path: Path) -> bytes:
    return make_release_zip(tmp_path / "served.zip").read_bytes()


@pytest.fixture
def server(release: bytes, monkeypatch: pytest.MonkeyPatch):
    """A loopback server for the fake release; yields (state, url)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    state = ServerState(payload=release)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}/{ARCHIVE_NAME}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _tree_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_download_dataset_gives_standard_layout_and_records_the_archive(server, release, tmp_path):
    state, url = server
    dest = tmp_path / "data"
    root = download_dataset(dest, url, progress=False)
    assert root == dest / "chest_xray"
    expected = [f"{s}/{c}/img{i}{j}.jpeg" for i, s in enumerate(SPLITS) for j, c in enumerate(CLASSES)]
    assert _tree_files(root) == sorted(expected)  # no __MACOSX, .DS_Store or chest_xray/chest_xray left
    with Image.open(root / "train" / "PNEUMONIA" / "img01.jpeg") as image:
        assert image.size == (16, 12)
    assert (dest / ARCHIVE_NAME).read_bytes() == release
    assert not (dest / f"{ARCHIVE_NAME}.part").exists()
    record = json.loads(record_path(dest / ARCHIVE_NAME).read_text())
    assert record["size"] == len(release)
    assert record["sha256"] == hashlib.sha256(release).hexdigest()
    assert record["url"] == url and record["date"]
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == []  # no temp folders left
    assert state.ranges == [None]


def test_interrupted_transfer_keeps_part_and_rerun_resumes_with_range(server, release, tmp_path):
    state, url = server
    dest = tmp_path / "data"
    cut = 700
    state.cut_after = cut
    with pytest.raises(DownloadError, match="re-run the same command to resume"):
        download_dataset(dest, url, progress=False)
    part = dest / f"{ARCHIVE_NAME}.part"
    assert part.stat().st_size == cut
    assert not (dest / ARCHIVE_NAME).exists() and not (dest / "chest_xray").exists()

    state.cut_after = None
    root = download_dataset(dest, url, progress=False)
    assert state.ranges[-1] == f"bytes={cut}-"
    assert (dest / ARCHIVE_NAME).read_bytes() == release
    assert read_record(dest / ARCHIVE_NAME).sha256 == hashlib.sha256(release).hexdigest()
    assert len(_tree_files(root)) == len(SPLITS) * len(CLASSES)


def test_server_ignoring_range_restarts_from_zero(server, release, tmp_path):
    state, url = server
    state.ignore_range = True
    target = tmp_path / ARCHIVE_NAME
    target.with_name(target.name + ".part").write_bytes(b"stale bytes from another file" * 10)
    fetch(url, target, progress=False)
    assert state.ranges == ["bytes=290-"]  # it asked to resume, got 200, and started over
    assert target.read_bytes() == release


def test_part_that_is_already_complete_is_accepted_on_416(server, release, tmp_path):
    state, url = server
    target = tmp_path / ARCHIVE_NAME
    target.with_name(target.name + ".part").write_bytes(release)
    fetch(url, target, progress=False)
    assert state.ranges == [f"bytes={len(release)}-"]
    assert target.read_bytes() == release


def test_http_404_is_a_clean_error_and_leaves_nothing(server, tmp_path):
    state, url = server
    state.not_found = True
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download_dataset(dest, url, progress=False)
    assert url in str(info.value)
    assert not (dest / ARCHIVE_NAME).exists() and not (dest / "chest_xray").exists()


def test_connection_refused_says_rerun_resumes(tmp_path):
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot connect.*re-run the same command"):
        fetch(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5)


def test_sha_mismatch_against_record_is_refused(server, release, tmp_path):
    _, url = server
    dest = tmp_path / "data"
    download_dataset(dest, url, progress=False)
    archive = dest / ARCHIVE_NAME
    damaged = bytearray(release)
    damaged[len(damaged) // 2] ^= 0xFF  # same size, different content
    archive.write_bytes(bytes(damaged))
    with pytest.raises(DownloadError, match=r"sha256 .* does not match .* delete") as info:
        download_dataset(dest, url, force=True, progress=False)
    assert str(archive) in str(info.value)
    with pytest.raises(DownloadError, match="size"):
        verify(archive, size=len(release) + 1)


@pytest.mark.parametrize(
    "member", ["../evil.jpeg", "/abs/evil.jpeg", "chest_xray/train/NORMAL/../../../x.jpeg"]
)
def test_zip_slip_member_is_rejected_before_anything_is_written(tmp_path, member):
    archive = tmp_path / "bad.zip"
    make_release_zip(archive)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(member, b"payload")
    dest = tmp_path / "out" / "data"
    with pytest.raises(DownloadError, match="unsafe member") as info:
        extract(archive, dest)
    assert member in str(info.value)
    assert not (dest / "chest_xray").exists()
    assert not list(tmp_path.rglob("evil.jpeg")) and not list(tmp_path.rglob("x.jpeg"))


def test_corrupt_zip_names_the_file_and_leaves_no_half_tree(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"this is not a zip" * 50)
    with pytest.raises(DownloadError, match="corrupt zip") as info:
        extract(garbage, tmp_path / "a")
    assert str(garbage) in str(info.value)

    archive = make_release_zip(tmp_path / "crc.zip")
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info_last = next(i for i in zf.infolist() if i.filename.endswith("img21.jpeg"))
    data[info_last.header_offset + 30 + len(info_last.filename) + 50] ^= 0xFF  # inside the stored image
    archive.write_bytes(bytes(data))
    dest = tmp_path / "b"
    with pytest.raises(DownloadError, match="corrupt zip"):
        extract(archive, dest)
    assert list(dest.iterdir()) == []  # neither chest_xray/ nor a temporary folder


def test_mendeley_layout_without_val_or_double_nesting_extracts(tmp_path):
    archive = make_release_zip(tmp_path / "m.zip", nested=False, splits=("train", "test"))
    root = extract(archive, tmp_path / "data")
    assert _tree_files(root) == sorted(
        f"{s}/{c}/img{i}{j}.jpeg" for i, s in enumerate(("train", "test")) for j, c in enumerate(CLASSES)
    )


def test_second_call_does_nothing_and_force_redoes_from_the_archive(server, tmp_path):
    state, url = server
    dest = tmp_path / "data"
    root = download_dataset(dest, url, progress=False)
    marker = root / "train" / "NORMAL" / "user_note.txt"
    marker.write_text("kept")
    assert download_dataset(dest, url, progress=False) == root
    assert marker.exists() and len(state.ranges) == 1  # no request, no re-extraction
    assert download_dataset(dest, url, force=True, progress=False) == root
    assert not marker.exists() and len(state.ranges) == 1  # re-extracted from the verified archive


def test_incomplete_existing_folder_is_not_overwritten_silently(tmp_path):
    dest = tmp_path / "data"
    (dest / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    with pytest.raises(DownloadError, match=r"incomplete .*--force"):
        download_dataset(dest, "http://127.0.0.1:9/never-contacted", progress=False)


def test_cli_prints_path_and_hint(server, tmp_path, capsys):
    _, url = server
    dest = tmp_path / "data"
    assert main(["data", "download", "--dest", str(dest), "--url", url]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(dest / "chest_xray")
    assert f"pneumocxr run --data {dest / 'chest_xray'}" in err


def test_cli_404_exits_2_with_one_line(server, tmp_path, capsys):
    state, url = server
    state.not_found = True
    assert main(["data", "download", "--dest", str(tmp_path / "d"), "--url", url]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1
    assert lines[0].startswith("pneumocxr: error:") and "404" in lines[0]
