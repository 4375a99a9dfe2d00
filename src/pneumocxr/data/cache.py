"""Preprocessed-image cache: decode every image once, then read uint8 pixels from memory maps.

Decoding a full-size chest X-ray JPEG and shrinking it to the model's input costs far more than
the training step on it, and the result never changes. So the first pass stores each image as
``uint8`` at the model's input size and every later epoch or run reads it back from a memory map.

Layout: ``<cache_dir>/<settings hash>/`` holds one cache per (image_size, resize_mode, format
version), so changing the input size can never serve stale pixels. Inside it, append-only chunks:
``chunk-<unique>.npy`` (N, S, S) uint8 plus ``chunk-<unique>.keys.json`` naming the N images.
Both are written under temporary names and renamed when complete, the keys file last: a chunk
exists once its keys file does. An interrupted fill therefore loses at most the chunk in
progress, never corrupts what is there, and concurrent writers (DDP ranks, two runs) only ever
add whole chunks under unique names; an image cached twice is harmless.

An image's key is (absolute path, size, mtime_ns[, archive member]), not a hash of its content:
hashing every file on every run would cost a good part of what the cache saves. Rewriting or
touching a file changes its mtime and so re-decodes it; moving the dataset re-decodes all of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.errors import ConfigError, DatasetError, PneumoCXRError, UnsupportedImageError
from pneumocxr.imaging import RESIZE_MODES, square_uint8

logger = logging.getLogger(__name__)

# Bump when decoding or resizing changes what a cached image contains: it moves every cache to a
# new settings directory instead of serving pixels the current code would not produce.
# 2: DICOM takes the 8-bit export path (imaging.dicom_pixels) instead of a min–max stretch.
CACHE_FORMAT_VERSION = 2
DEFAULT_CHUNK_SIZE = 512  # images per chunk file: ~26 MB at 224 px, at most that much lost on a kill
_MAX_TASK = 32  # images per worker task: small enough to balance load, large enough to amortise IPC
_POOL_MIN_MISSES = 16  # below this a process pool costs more than it saves
_STALE_TEMP_S = 3600  # leftovers of killed writers older than this are removed
_Result = tuple[str, np.ndarray | None, str | None]  # (key, pixels, None) or (key, None, reason)


@dataclass(frozen=True)
class DecodeFailure:
    """One image that could not be decoded, and why."""

    record: ImageRecord
    reason: str


@dataclass(frozen=True)
class LoadResult:
    """What ``PreprocessedCache.load_available`` returns: the images that decoded and those that did not."""

    pixels: np.ndarray  # (len(records), S, S) uint8, in the order of ``records``
    records: tuple[ImageRecord, ...]  # the input records that decoded, input order kept
    failures: tuple[DecodeFailure, ...]  # every record that did not, with the reason


@dataclass(frozen=True)
class CacheStats:
    """Size of one settings directory of the cache."""

    directory: Path
    entries: int  # distinct images cached
    chunks: int
    bytes: int  # on disk, chunk and key files together


class CacheDecodeError(DatasetError):
    """Some images could not be decoded (all listed in ``failures``); the others are already cached."""

    def __init__(self, failures: Sequence[DecodeFailure], total: int):
        self.failures = tuple(failures)
        shown = "; ".join(f"{f.record.display_name}: {f.reason}" for f in self.failures[:20])
        more = f"; and {len(self.failures) - 20} more" if len(self.failures) > 20 else ""
        super().__init__(
            f"{len(self.failures)} of {total} images could not be decoded ({shown}{more}). "
            "Fix or remove these files (the others are cached, so a re-run is quick)."
        )


def settings_key(image_size: int, resize_mode: str) -> str:
    """Short hash naming the settings directory for one preprocessing configuration."""
    text = json.dumps({"image_size": image_size, "resize_mode": resize_mode, "format": CACHE_FORMAT_VERSION})
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def record_key(record: ImageRecord, stat: os.stat_result) -> str:
    """Cache key of one image: where it is and which version of the file (size, mtime)."""
    text = f"{os.path.abspath(record.path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{record.member or ''}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def decode_record(record: ImageRecord, image_size: int, resize_mode: str = "squash") -> np.ndarray:
    """The cache's preprocessing of one image: (S, S) uint8, the same bytes a cache hit returns.

    Large images are first shrunk by a power of two (block means, every format alike) while both
    sides stay >= ``image_size`` (``imaging.resize.reduce_for_model``).
    """
    return square_uint8(load_pixels(record, min_size=image_size), image_size, resize_mode)


def _decode_batch(
    jobs: Sequence[tuple[str, ImageRecord]], image_size: int, resize_mode: str
) -> list[_Result]:
    """Decode a batch (in a worker process). Only a user's bad file becomes a failure; anything
    else is a bug and propagates."""
    results: list[_Result] = []
    for key, record in jobs:
        try:
            results.append((key, decode_record(record, image_size, resize_mode), None))
        except PneumoCXRError as exc:
            results.append((key, None, getattr(exc, "reason", None) or str(exc)))
        except OSError as exc:
            results.append((key, None, f"cannot read the file ({exc.strerror or exc})"))
    return results


def default_workers() -> int:
    """Decoding processes to use when not told: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class PreprocessedCache:
    """uint8 images at the model's input size, filled on first use and memory-mapped after.

    ``load`` / ``load_available`` serve a whole dataset (decoding misses in parallel and saving
    them as they complete); ``get`` serves one image.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        image_size: int,
        resize_mode: str = "squash",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ):
        if image_size < 8:
            raise ConfigError(f"cache image_size={image_size} is too small; use at least 8")
        if resize_mode not in RESIZE_MODES:
            raise ConfigError(f"cache resize_mode={resize_mode!r}; use one of {', '.join(RESIZE_MODES)}")
        if chunk_size < 1:
            raise ConfigError(f"cache chunk_size={chunk_size}; use 1 or more")
        self.image_size, self.resize_mode, self.chunk_size = image_size, resize_mode, chunk_size
        self.directory = Path(cache_dir).expanduser() / settings_key(image_size, resize_mode)
        self._chunks: list[np.ndarray] = []  # memory maps, (N, S, S) uint8 each
        self._seen: set[str] = set()  # chunk names already indexed
        self._index: dict[str, tuple[int, int]] = {}  # image key -> (chunk number, row)
        self._write_warned = False
        self._remove_stale_temps()
        self.refresh()

    def refresh(self) -> None:
        """Index chunks written since the last look (by this or another process)."""
        if not self.directory.is_dir():
            return
        for keys_file in sorted(self.directory.glob("chunk-*.keys.json")):
            name = keys_file.name[: -len(".keys.json")]
            if name not in self._seen:
                self._seen.add(name)
                self._open_chunk(name)

    def _open_chunk(self, name: str) -> None:
        try:
            keys = json.loads((self.directory / f"{name}.keys.json").read_text())["keys"]
            pixels = np.load(self.directory / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable cache chunk %s/%s (%s)", self.directory, name, exc)
            return
        expected = (len(keys), self.image_size, self.image_size)
        if pixels.shape != expected or pixels.dtype != np.uint8:
            logger.warning(
                "ignoring cache chunk %s/%s: holds %s %s, expected %s uint8",
                self.directory, name, pixels.shape, pixels.dtype, expected,
            )  # fmt: skip
            return
        number = len(self._chunks)
        self._chunks.append(pixels)
        for row, key in enumerate(keys):
            self._index[key] = (number, row)

    def get(self, record: ImageRecord) -> np.ndarray:
        """One image as (S, S) uint8: from the cache, else decoded now.

        A miss is not written back: one-image chunks would fragment the cache, and the images a
        server sees are rarely seen twice. Raises ``UnsupportedImageError`` for a bad file.
        """
        (key,), failures = self._keys([record])
        if key is None:
            raise UnsupportedImageError(record.display_name, f"{failures[0]}; check the path")
        if key not in self._index:
            self.refresh()
        if key in self._index:
            number, row = self._index[key]
            return np.array(self._chunks[number][row])
        return decode_record(record, self.image_size, self.resize_mode)

    @staticmethod
    def _keys(records: Sequence[ImageRecord]) -> tuple[list[str | None], dict[int, str]]:
        """Each record's cache key (None where the file cannot be stat'ed), and why not."""
        stats: dict[str, os.stat_result | str] = {}  # one stat per file: archives hold many records
        keys: list[str | None] = []
        failures: dict[int, str] = {}
        for position, record in enumerate(records):
            path = str(record.path)
            if path not in stats:
                try:
                    stats[path] = os.stat(path)
                except OSError as exc:
                    stats[path] = f"cannot read the file ({exc.strerror or exc})"
            stat = stats[path]
            if isinstance(stat, str):
                failures[position] = stat
            keys.append(None if isinstance(stat, str) else record_key(record, stat))
        return keys, failures

    def load(
        self, records: Sequence[ImageRecord], *, workers: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """All images as (N, S, S) uint8 in record order, decoding only what is not cached.

        If any image cannot be decoded, everything that did decode is saved first, then
        ``CacheDecodeError`` (a ``DatasetError``) lists the bad files. Use ``load_available`` to
        continue without them.
        """
        result = self.load_available(records, workers=workers, progress=progress)
        if result.failures:
            raise CacheDecodeError(result.failures, len(records))
        return result.pixels

    def load_available(
        self, records: Sequence[ImageRecord], *, workers: int | None = None, progress: bool = False
    ) -> LoadResult:
        """Like ``load``, but bad images are returned in ``failures`` (and logged) instead of raised.

        ``workers``: decoding processes for the misses; None = one per available CPU, 1 = in
        this process.
        """
        if workers is not None and workers < 1:
            raise ConfigError(f"cache workers={workers}; use 1 or more, or None for one per CPU")
        self.refresh()
        out = np.empty((len(records), self.image_size, self.image_size), dtype=np.uint8)
        keys, failures = self._keys(records)
        pending: dict[str, list[int]] = {}  # key -> positions in ``records`` still to decode
        hits: list[tuple[int, int, int]] = []  # (chunk, row, position)
        for position, key in enumerate(keys):
            if key is None:
                continue
            if key in self._index:
                hits.append((*self._index[key], position))
            else:
                pending.setdefault(key, []).append(position)
        self._gather(hits, out)
        logger.info("cache %s: %d hits, %d to decode", self.directory, len(hits), len(pending))
        if pending:
            jobs = [(key, records[positions[0]]) for key, positions in pending.items()]
            for key, pixels, reason in self._decode_and_store(jobs, workers, progress):
                for position in pending[key]:
                    if pixels is None:
                        failures[position] = str(reason)
                    else:
                        out[position] = pixels
        ok = np.ones(len(records), dtype=bool)
        for position, reason in failures.items():
            ok[position] = False
            logger.warning("cannot decode %s: %s", records[position].display_name, reason)
        return LoadResult(
            pixels=out if ok.all() else out[ok],
            records=tuple(r for r, good in zip(records, ok) if good),
            failures=tuple(DecodeFailure(records[p], failures[p]) for p in sorted(failures)),
        )

    def _gather(self, hits: list[tuple[int, int, int]], out: np.ndarray) -> None:
        """Copy cached rows into ``out``, one chunk at a time in row order (sequential reads)."""
        if not hits:
            return
        table = np.asarray(hits, dtype=np.int64)  # (n_hits, 3): chunk, row, position
        table = table[np.lexsort((table[:, 1], table[:, 0]))]
        bounds = np.flatnonzero(np.diff(table[:, 0])) + 1
        for block in np.split(table, bounds):
            out[block[:, 2]] = self._chunks[int(block[0, 0])][block[:, 1]]

    def _decode_and_store(
        self, jobs: list[tuple[str, ImageRecord]], workers: int | None, progress: bool
    ) -> Iterator[_Result]:
        """Decode ``jobs`` and yield each result, saving a chunk whenever ``chunk_size`` decoded.

        On any interruption (an exception, Ctrl-C) what has decoded so far is saved before the
        exception propagates, so a re-run only decodes the rest.
        """
        from tqdm.auto import tqdm

        from pneumocxr.progress import show_bars

        buffer_keys: list[str] = []
        buffer_pixels: list[np.ndarray] = []
        # a bar only on a terminal; a batch log gets the one line below (progress.py)
        bar = tqdm(total=len(jobs), desc="decoding images", unit="img", disable=not show_bars(progress))
        started, done = time.monotonic(), 0
        try:
            for key, pixels, reason in self._decode(jobs, workers):
                bar.update(1)
                done += 1
                if pixels is not None:
                    buffer_keys.append(key)
                    buffer_pixels.append(pixels)
                    if len(buffer_keys) >= self.chunk_size:
                        self._write_chunk(buffer_keys, buffer_pixels)
                        buffer_keys, buffer_pixels = [], []
                yield key, pixels, reason
        finally:
            bar.close()
            if buffer_keys:
                self._write_chunk(buffer_keys, buffer_pixels)
            logger.info("decoded %d of %d images in %.1f s", done, len(jobs), time.monotonic() - started)

    def _decode(self, jobs: list[tuple[str, ImageRecord]], workers: int | None) -> Iterator[_Result]:
        """Results in completion order: in this process, or from a pool of worker processes."""
        workers = default_workers() if workers is None else workers
        if workers == 1 or len(jobs) < _POOL_MIN_MISSES:
            for job in jobs:
                yield from _decode_batch([job], self.image_size, self.resize_mode)
            return
        task = max(1, min(_MAX_TASK, len(jobs) // (4 * workers)))
        executor = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(jobs)))
        try:
            futures = [
                executor.submit(_decode_batch, jobs[i : i + task], self.image_size, self.resize_mode)
                for i in range(0, len(jobs), task)
            ]
            for future in concurrent.futures.as_completed(futures):
                yield from future.result()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _write_chunk(self, keys: list[str], pixels: list[np.ndarray]) -> None:
        """Save one chunk atomically (temp names, then rename: keys file last) and index it.

        A cache that cannot be written (read-only, disk full) is logged and skipped: the images
        are still returned, only the next run decodes them again.
        """
        name = f"chunk-{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        array = np.stack(pixels)  # (N, S, S) uint8
        npy, keys_file = self.directory / f"{name}.npy", self.directory / f"{name}.keys.json"
        tmp_npy, tmp_keys = self.directory / f".{name}.npy.tmp", self.directory / f".{name}.keys.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            note = self.directory / "settings.json"  # for people: what this directory holds
            if not note.exists():
                settings = {"image_size": self.image_size, "resize_mode": self.resize_mode}
                note.write_text(json.dumps({**settings, "format": CACHE_FORMAT_VERSION}))
            with open(tmp_npy, "wb") as handle:
                np.save(handle, array)
            tmp_keys.write_text(json.dumps({"keys": keys}))
            os.replace(tmp_npy, npy)
            os.replace(tmp_keys, keys_file)
        except OSError as exc:
            for leftover in (tmp_npy, tmp_keys, npy):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            if not self._write_warned:
                logger.warning("cannot write the image cache in %s (%s); images will be decoded again "
                               "next time: pass a writable cache directory", self.directory, exc)  # fmt: skip
                self._write_warned = True
            return
        self._seen.add(name)
        self._open_chunk(name)

    def _remove_stale_temps(self) -> None:
        """Delete what killed writers left behind: temp files, and data files never committed."""
        if not self.directory.is_dir():
            return
        orphans = [p for p in self.directory.glob("chunk-*.npy") if not p.with_suffix(".keys.json").exists()]
        for path in [*self.directory.glob(".*.tmp"), *orphans]:
            with contextlib.suppress(OSError):  # another process removed it first, or we may not
                if path.stat().st_mtime < time.time() - _STALE_TEMP_S:
                    path.unlink()

    def stats(self) -> CacheStats:
        """How many images this settings directory holds and its size on disk."""
        self.refresh()
        files = list(self.directory.glob("chunk-*")) if self.directory.is_dir() else []
        size = sum(p.stat().st_size for p in files)
        return CacheStats(self.directory, entries=len(self._index), chunks=len(self._chunks), bytes=size)

    def clear(self) -> None:
        """Delete this settings directory (other image sizes / resize modes are kept)."""
        self._chunks, self._seen, self._index = [], set(), {}
        shutil.rmtree(self.directory, ignore_errors=True)
        logger.info("cleared image cache %s", self.directory)
