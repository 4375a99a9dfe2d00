"""Download, verify and extract the public Kermany release (ChestXRay2017.zip, Mendeley Data).

The archive is about 1.2 GB, so every step is built to survive interruption without losing work:

* ``fetch`` streams into ``<archive>.part`` and resumes with an HTTP ``Range`` request; only a complete,
  length-checked transfer is renamed to the final name.
* ``verify`` checks size and sha256 against ``<archive>.json``, a record written after the first download
  that extracted cleanly, so a later run notices a changed or damaged file instead of training on it.
* ``extract`` writes into a hidden temporary folder and renames it into place at the end, so a half tree
  never looks like a dataset. The zip's own CRCs are checked as members are read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from pneumocxr._version import __version__
from pneumocxr.errors import DownloadError
from pneumocxr.labels import CLASS_NAMES, SPLITS
from pneumocxr.progress import show_bars

log = logging.getLogger(__name__)

DEFAULT_URL = (
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
    "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
)
ARCHIVE_NAME = "ChestXRay2017.zip"
DATASET_DIRNAME = "chest_xray"
# Splits a usable tree must have. The Mendeley release ships train/ and test/ only (Kaggle's copy adds a
# 16-image val/), and the project carves validation from train by patient anyway, so val/ is optional.
REQUIRED_SPLITS = ("train", "test")
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
_TMP_PREFIX = f".{DATASET_DIRNAME}.extracting-"
_OLD_PREFIX = f".{DATASET_DIRNAME}.old-"
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
# Errors a broken connection can raise while reading: resets and timeouts are OSErrors, short bodies
# surface as http.client exceptions, and the opener wraps connect failures in URLError.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, urllib.error.URLError)


@dataclass(frozen=True)
class DownloadRecord:
    """What a good download looked like; later runs compare the file on disk against it."""

    url: str  # where the archive came from (informational: a mirror of the same file verifies too)
    size: int  # bytes
    sha256: str  # lowercase hex digest
    date: str  # ISO-8601 UTC time of the recording


def record_path(archive: Path) -> Path:
    """The JSON record beside an archive: ``ChestXRay2017.zip`` → ``ChestXRay2017.zip.json``."""
    return archive.with_name(archive.name + ".json")


def read_record(archive: Path) -> DownloadRecord | None:
    """The record of an earlier good download, or None when there is none yet."""
    path = record_path(archive)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DownloadRecord(
            str(data["url"]), int(data["size"]), str(data["sha256"]).lower(), str(data["date"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DownloadError(
            f"{path}: unreadable download record ({exc}); delete it and re-run to record the archive again"
        ) from exc


def write_record(archive: Path, record: DownloadRecord) -> Path:
    """Write ``record`` beside ``archive`` (atomically, so a crash never leaves half a JSON)."""
    path = record_path(archive)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (the archive does not fit comfortably in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(archive: Path, *, size: int | None = None, sha256: str | None = None) -> str:
    """Check an archive's size and sha256 against expected values; return its sha256.

    Either expectation may be None (not known yet). A mismatch raises DownloadError that names the file
    and says how to start over, because a damaged 1.2 GB file is cheaper to re-fetch than to debug.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found; run `pneumocxr data download` to fetch it")
    redo = (
        f"delete {archive} (and {record_path(archive).name} if the release itself changed), then re-run "
        "`pneumocxr data download` to fetch it again"
    )
    actual_size = archive.stat().st_size
    if size is not None and actual_size != size:
        raise DownloadError(f"{archive}: size {actual_size} bytes, expected {size}; {redo}")
    log.info("verifying sha256 of %s (%d bytes)", archive, actual_size)
    actual_sha = sha256_file(archive)
    if sha256 is not None and actual_sha != sha256.lower():
        raise DownloadError(f"{archive}: sha256 {actual_sha} does not match the expected {sha256}; {redo}")
    return actual_sha


def _content_range(header: str | None) -> tuple[int, int | None] | None:
    """Parse ``bytes START-END/TOTAL`` (TOTAL may be ``*``) into (START, TOTAL)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    if match is None:
        return None
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """Send the GET (with ``Range`` when resuming). None means 416: the .part already holds everything."""
    headers = {"User-Agent": f"pneumocxr/{__version__} (+urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error carries the open connection; headers stay readable
        if exc.code == 416 and offset:
            match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", exc.headers.get("Content-Range") or "")
            claimed = int(match.group(1)) if match else None
            if claimed is not None and claimed != offset:
                raise DownloadError(
                    f"{url}: server says the file has {claimed} bytes but the partial download has {offset}; "
                    "delete the .part file and re-run to start over"
                ) from exc
            return None
        raise DownloadError(
            f"{url}: HTTP {exc.code} {exc.reason}; check the address (--url) or try again later"
        ) from exc
    except _NETWORK_ERRORS as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"{url}: cannot connect ({reason}); check the network, then re-run the same command "
            "(a partial download is kept and resumes)"
        ) from exc


def _plan(response: http.client.HTTPResponse, url: str, offset: int) -> tuple[int, int | None]:
    """Where writing starts and the full size expected, from the status and length headers."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if response.status == 206:
        parsed = _content_range(response.headers.get("Content-Range"))
        if parsed is None or parsed[0] != offset:
            got = response.headers.get("Content-Range")
            raise DownloadError(
                f"{url}: server answered the resume request with range {got!r} instead of bytes {offset}-; "
                "delete the .part file and re-run to start over"
            )
        total = parsed[1] if parsed[1] is not None else (offset + length if length is not None else None)
        return offset, total
    if offset:
        log.info("server ignored the resume request (HTTP %d); downloading from the start", response.status)
    return 0, length


def fetch(url: str, target: Path, *, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``target`` through ``target.part``, resuming a partial file; return ``target``.

    Handles 206 (append), 200 to a resume request (server ignores Range: start over) and 416 (the partial
    file is already complete). The byte count is checked against Content-Length / Content-Range when the
    server sends them; a short transfer raises DownloadError and keeps the .part for the next run.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if offset:
        log.info("resuming %s from byte %d", part, offset)
    response = _open(url, offset, timeout)
    if response is None:
        log.info("%s already holds the whole file (server answered 416)", part)
    else:
        with response:
            start, total = _plan(response, url, offset)
            try:
                written = _stream(response, part, start, total, url, progress)
            except OSError as exc:  # network errors became DownloadError inside; this is the local disk
                raise DownloadError(f"{part}: cannot write ({exc}); fix the disk, then re-run") from exc
        if total is not None and written != total:
            raise DownloadError(
                f"{url}: transfer ended after {written} of {total} bytes; re-run the same command to resume "
                f"(the partial file {part} is kept)"
            )
    os.replace(part, target)
    log.info("downloaded %s (%d bytes)", target, target.stat().st_size)
    return target


def _stream(response, part: Path, start: int, total: int | None, url: str, progress: bool) -> int:
    """Append the body to ``part`` from byte ``start``; return the file's size afterwards."""
    written = start
    bar = tqdm(
        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name,
        disable=not show_bars(progress),  # a terminal only; a batch log gets the "downloaded" line
    )  # fmt: skip
    with bar, open(part, "r+b" if start else "wb") as out:
        out.seek(start)
        out.truncate()
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except _NETWORK_ERRORS as exc:
                out.flush()
                raise DownloadError(
                    f"{url}: connection lost after {written} bytes ({type(exc).__name__}: {exc}); re-run the "
                    f"same command to resume (the partial file {part} is kept)"
                ) from exc
            if not chunk:
                return written
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))


def _check_safe(name: str, archive: Path) -> None:
    """Refuse members that would land outside the destination (zip-slip)."""
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise DownloadError(
            f"{archive}: refusing unsafe member {name!r} (absolute path or '..'); this is not the genuine "
            "release: delete the archive and download it again"
        )


def _layout_path(name: str) -> tuple[str, ...] | None:
    """Map a member to (split, CLASS, file) in the standard layout, or None for anything else.

    Finds the first ``<split>/<CLASS>/`` pair wherever it sits, which flattens both the Mendeley
    ``chest_xray/train/...`` and Kaggle's duplicated ``chest_xray/chest_xray/train/...`` nesting.
    """
    parts = [p for p in name.split("/") if p]
    for i in range(len(parts) - 2):
        split, label = parts[i].lower(), parts[i + 1].upper()
        if split in SPLITS and label in CLASS_NAMES:
            return (split, label, *parts[i + 2 :]) if len(parts) == i + 3 else None
    return None


def _is_junk(name: str) -> bool:
    """macOS/Windows metadata the release carries: ``__MACOSX/``, ``.DS_Store``, ``._*`` forks."""
    parts = [p for p in name.split("/") if p]
    return "__MACOSX" in parts or parts[-1] in _JUNK_NAMES or parts[-1].startswith("._")


def missing_parts(root: Path) -> list[str]:
    """Folders a usable dataset tree lacks (empty list = complete)."""
    return [
        f"{split}/{label}"
        for split in REQUIRED_SPLITS
        for label in CLASS_NAMES
        if not (root / split / label).is_dir() or not any((root / split / label).iterdir())
    ]


def extract(archive: Path, dest: Path, *, force: bool = False) -> Path:
    """Extract the release into ``dest/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``; return that root.

    Idempotent: an existing complete tree is left alone unless ``force``. Extraction goes to a hidden
    temporary folder renamed into place at the end, so an interruption never leaves a tree that looks done.
    """
    archive, dest = Path(archive), Path(dest)
    root = dest / DATASET_DIRNAME
    if root.exists() and not force:
        missing = missing_parts(root)
        if not missing:
            log.info("%s is already complete; nothing to extract", root)
            return root
        raise DownloadError(
            f"{root} exists but is incomplete (missing {', '.join(missing)}); move it away or pass --force"
        )
    dest.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=dest))
    try:
        _extract_members(archive, tmp)
        missing = missing_parts(tmp)
        if missing:
            raise DownloadError(
                f"{archive}: no images for {', '.join(missing)}; is this the ChestXRay2017 release? "
                "Delete it and download again"
            )
        _swap_into_place(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %s to %s", archive, root)
    return root


def _extract_members(archive: Path, out_root: Path) -> None:
    """Copy the layout's members from ``archive`` under ``out_root``, checking CRCs as they are read."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_safe(info.filename, archive)
            written: dict[tuple[str, ...], int] = {}
            skipped: list[str] = []
            for info in infos:
                if info.is_dir() or _is_junk(info.filename):
                    continue
                rel = _layout_path(info.filename)
                if rel is None:
                    skipped.append(info.filename)
                elif rel in written:
                    if written[rel] != info.CRC:
                        log.warning("%s: %s duplicates %s with other content; kept the first", archive,
                                    info.filename, "/".join(rel))  # fmt: skip
                else:
                    target = out_root.joinpath(*rel)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
                    written[rel] = info.CRC
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(
            f"{archive}: corrupt zip archive ({exc}); delete it and re-run `pneumocxr data download`"
        ) from exc
    if skipped:
        log.info("skipped %d members outside split/CLASS/ folders (e.g. %s)", len(skipped), skipped[0])
    log.info("extracted %d images from %s", len(written), archive)


def _swap_into_place(tmp: Path, root: Path) -> None:
    """Rename the finished tree to ``root``; an old tree (``force``) is moved aside first, then deleted."""
    old = None
    if root.exists():
        old = root.with_name(f"{_OLD_PREFIX}{os.getpid()}-{time.time_ns()}")
        root.rename(old)
    tmp.rename(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale(dest: Path) -> None:
    """Delete temporary folders an interrupted earlier extraction left behind."""
    for stale in [*dest.glob(f"{_TMP_PREFIX}*"), *dest.glob(f"{_OLD_PREFIX}*")]:
        log.info("removing leftover %s from an interrupted extraction", stale)
        shutil.rmtree(stale, ignore_errors=True)


def download_dataset(
    dest: Path, url: str = DEFAULT_URL, *, force: bool = False, progress: bool = True
) -> Path:
    """Fetch, verify and extract the release under ``dest``; return the dataset root ``dest/chest_xray``.

    Re-running is always safe: a complete tree returns at once (``force`` re-extracts from the archive
    already on disk; delete the archive to download it again), a partial download resumes, and an archive
    that was recorded before is checked against its record before it is trusted.
    """
    dest = Path(dest)
    root = dest / DATASET_DIRNAME
    if root.exists() and not force:
        return extract(dest / ARCHIVE_NAME, dest)  # complete → returns; incomplete → says what to do
    archive = dest / ARCHIVE_NAME
    record = read_record(archive)
    if archive.is_file():
        log.info("using the archive already at %s", archive)
    else:
        fetch(url, archive, progress=progress)
    sha = verify(archive, size=record.size if record else None, sha256=record.sha256 if record else None)
    extract(archive, dest, force=force)
    if record is None:
        # Recorded only after a clean extraction (all CRCs good), so the record never pins a bad file.
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_record(archive, DownloadRecord(url, archive.stat().st_size, sha, now))
    return root
