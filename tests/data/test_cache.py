"""The preprocessed-image cache: same pixels as a direct decode, decoded once, never corrupted."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumocxr.data import cache as cache_module
from pneumocxr.data.cache import CacheDecodeError, PreprocessedCache, decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError, DatasetError, UnsupportedImageError

SIZE = 16


def _record(path: Path, member: str | None = None) -> ImageRecord:
    return ImageRecord(
        path=path, label=0, split="train", patient_id=path.stem, sublabel="normal", member=member
    )


def _images(folder: Path, count: int, seed: int = 0) -> list[ImageRecord]:
    """``count`` small grayscale JPEGs of varied, non-square sizes (one PNG among them)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        height, width = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        suffix = ".png" if i == 1 else ".jpeg"
        path = folder / f"img{i:03d}{suffix}"
        Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L").save(path)
        records.append(_record(path))
    return records


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[ImageRecord]:
    """Every record the cache decodes (in this process: use workers=1), in order."""
    calls: list[ImageRecord] = []
    real = cache_module.load_pixels

    def spy(record: ImageRecord, **kwargs: object) -> np.ndarray:
        calls.append(record)
        return real(record, **kwargs)

    monkeypatch.setattr(cache_module, "load_pixels", spy)
    return calls


def test_cached_pixels_equal_a_direct_decode_and_resize(tmp_path: Path) -> None:
    records = _images(tmp_path / "img", 5)
    cache = PreprocessedCache(tmp_path / "cache", SIZE)
    pixels = cache.load(records, workers=1)
    assert pixels.shape == (5, SIZE, SIZE) and pixels.dtype == np.uint8
    for row, record in zip(pixels, records):
        np.testing.assert_array_equal(row, decode_record(record, SIZE))
    again = PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    np.testing.assert_array_equal(again, pixels)


def test_second_load_decodes_nothing(tmp_path: Path, count_decodes: list[ImageRecord]) -> None:
    records = _images(tmp_path / "img", 6)
    first = PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    assert len(count_decodes) == 6
    count_decodes.clear()
    second = PreprocessedCache(tmp_path / "cache", SIZE).load(records[::-1], workers=1)
    assert count_decodes == []
    np.testing.assert_array_equal(second, first[::-1])


def test_a_touched_file_is_decoded_again_alone(tmp_path: Path, count_decodes: list[ImageRecord]) -> None:
    records = _images(tmp_path / "img", 4)
    PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    count_decodes.clear()
    stat = records[2].path.stat()
    os.utime(records[2].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    assert count_decodes == [records[2]]


def test_a_rewritten_file_serves_its_new_pixels(tmp_path: Path) -> None:
    records = _images(tmp_path / "img", 2)
    cache = PreprocessedCache(tmp_path / "cache", SIZE)
    before = cache.load(records, workers=1)
    Image.fromarray(np.full((30, 40), 255, dtype=np.uint8), mode="L").save(records[0].path)
    stat = records[0].path.stat()
    os.utime(records[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = cache.load(records, workers=1)
    assert after[0].min() >= 250 and not np.array_equal(before[0], after[0])
    np.testing.assert_array_equal(after[1], before[1])


def test_each_image_size_and_resize_mode_has_its_own_directory(tmp_path: Path) -> None:
    records = _images(tmp_path / "img", 3)
    small = PreprocessedCache(tmp_path / "cache", SIZE)
    large = PreprocessedCache(tmp_path / "cache", 2 * SIZE)
    boxed = PreprocessedCache(tmp_path / "cache", SIZE, resize_mode="letterbox")
    assert len({small.directory, large.directory, boxed.directory}) == 3
    assert small.load(records, workers=1).shape == (3, SIZE, SIZE)
    assert large.load(records, workers=1).shape == (3, 2 * SIZE, 2 * SIZE)
    assert (small.stats().entries, large.stats().entries, boxed.stats().entries) == (3, 3, 0)
    settings = json.loads((large.directory / "settings.json").read_text())
    assert settings["image_size"] == 2 * SIZE and settings["resize_mode"] == "squash"


def test_an_interrupted_fill_keeps_what_decoded_and_a_rerun_decodes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _images(tmp_path / "img", 10)
    real = cache_module.load_pixels
    calls: list[ImageRecord] = []

    def fail_on_sixth(record: ImageRecord, **kwargs: object) -> np.ndarray:
        calls.append(record)
        if len(calls) == 6:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the sixth decode
        return real(record, **kwargs)

    monkeypatch.setattr(cache_module, "load_pixels", fail_on_sixth)
    with pytest.raises(KeyboardInterrupt):
        PreprocessedCache(tmp_path / "cache", SIZE, chunk_size=3).load(records, workers=1)
    cache = PreprocessedCache(tmp_path / "cache", SIZE, chunk_size=3)
    # One full chunk of 3 plus the 2 decoded before the interruption (saved on the way out).
    assert cache.stats().entries == 5
    assert not list(cache.directory.glob(".*.tmp"))

    calls.clear()
    monkeypatch.setattr(cache_module, "load_pixels", lambda r, **kw: calls.append(r) or real(r, **kw))
    pixels = cache.load(records, workers=1)
    assert calls == records[5:]
    for row, record in zip(pixels, records):
        np.testing.assert_array_equal(row, decode_record(record, SIZE))


def test_worker_processes_give_the_same_pixels(tmp_path: Path) -> None:
    records = _images(tmp_path / "img", 24)
    parallel = PreprocessedCache(tmp_path / "a", SIZE, chunk_size=5).load(records, workers=2)
    serial = PreprocessedCache(tmp_path / "b", SIZE).load(records, workers=1)
    np.testing.assert_array_equal(parallel, serial)
    stats = PreprocessedCache(tmp_path / "a", SIZE).stats()
    assert (stats.entries, stats.chunks) == (24, 5)


def test_npz_rows_are_cached_and_a_rewritten_archive_is_decoded_again(
    tmp_path: Path, count_decodes: list[ImageRecord]
) -> None:
    rng = np.random.default_rng(1)
    archive = tmp_path / "mnist.npz"
    np.savez(archive, train_images=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    records = [_record(archive, f"train_images[{i}]") for i in range(4)]
    pixels = PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    assert len({row.tobytes() for row in pixels}) == 4  # each row its own image
    for row, record in zip(pixels, records):
        np.testing.assert_array_equal(row, decode_record(record, SIZE))
    count_decodes.clear()
    PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    assert count_decodes == []
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    assert count_decodes == records


def test_bad_files_are_listed_after_the_good_ones_are_cached(
    tmp_path: Path, count_decodes: list[ImageRecord]
) -> None:
    records = _images(tmp_path / "img", 4)
    broken = tmp_path / "img" / "broken.jpeg"
    broken.write_bytes(b"not a jpeg at all")
    missing = tmp_path / "img" / "gone.jpeg"
    everything = [records[0], _record(broken), *records[1:], _record(missing)]
    cache = PreprocessedCache(tmp_path / "cache", SIZE)
    with pytest.raises(CacheDecodeError) as caught:
        cache.load(everything, workers=1)
    assert isinstance(caught.value, DatasetError)
    assert "2 of 6 images" in str(caught.value)
    assert str(broken) in str(caught.value) and str(missing) in str(caught.value)
    assert [f.record.path for f in caught.value.failures] == [broken, missing]

    count_decodes.clear()
    result = PreprocessedCache(tmp_path / "cache", SIZE).load_available(everything, workers=1)
    assert [r.path for r in count_decodes] == [broken]  # the good four were cached before the raise
    assert result.records == tuple(records)
    assert result.pixels.shape == (4, SIZE, SIZE)
    assert [f.record.path for f in result.failures] == [broken, missing]
    assert all(f.reason for f in result.failures)


def test_get_serves_hits_and_decodes_misses_without_writing(tmp_path: Path) -> None:
    records = _images(tmp_path / "img", 3)
    cache = PreprocessedCache(tmp_path / "cache", SIZE)
    pixels = cache.load(records[:2], workers=1)
    np.testing.assert_array_equal(cache.get(records[1]), pixels[1])
    np.testing.assert_array_equal(cache.get(records[2]), decode_record(records[2], SIZE))
    assert cache.stats().entries == 2
    with pytest.raises(UnsupportedImageError, match=r"gone\.jpeg"):
        cache.get(_record(tmp_path / "gone.jpeg"))


def test_chunks_written_by_another_process_are_picked_up_and_duplicates_are_harmless(tmp_path: Path) -> None:
    records = _images(tmp_path / "img", 4)
    rank0 = PreprocessedCache(tmp_path / "cache", SIZE)
    rank1 = PreprocessedCache(tmp_path / "cache", SIZE)
    a = rank0.load(records, workers=1)
    b = rank1.load(records, workers=1)  # rank1 looks again before decoding: nothing to do
    np.testing.assert_array_equal(a, b)
    assert rank1.stats().chunks == 1
    # Two writers that raced (both decoded before either saved) leave duplicate keys: still fine.
    rank1._write_chunk([cache_module.record_key(records[0], records[0].path.stat())], [a[0]])
    np.testing.assert_array_equal(PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1), a)


def test_a_damaged_chunk_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = _images(tmp_path / "img", 3)
    cache = PreprocessedCache(tmp_path / "cache", SIZE)
    expected = cache.load(records, workers=1)
    (chunk,) = cache.directory.glob("chunk-*.npy")
    chunk.write_bytes(chunk.read_bytes()[:200])  # truncated, e.g. a disk filled up mid-write
    with caplog.at_level(logging.WARNING, logger="pneumocxr.data.cache"):
        again = PreprocessedCache(tmp_path / "cache", SIZE).load(records, workers=1)
    assert "ignoring" in caplog.text and chunk.name.split(".")[0] in caplog.text
    np.testing.assert_array_equal(again, expected)


def test_stats_and_clear(tmp_path: Path) -> None:
    records = _images(tmp_path / "img", 3)
    cache = PreprocessedCache(tmp_path / "cache", SIZE)
    assert cache.stats().entries == 0
    cache.load(records, workers=1)
    stats = cache.stats()
    assert stats.entries == 3 and stats.chunks == 1 and stats.bytes >= 3 * SIZE * SIZE
    cache.clear()
    assert not cache.directory.exists() and cache.stats().entries == 0
    assert cache.load(records, workers=1).shape == (3, SIZE, SIZE)


def test_an_unwritable_cache_still_returns_pixels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = _images(tmp_path / "img", 2)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="pneumocxr.data.cache"):
        pixels = PreprocessedCache(blocker, SIZE).load(records, workers=1)
    assert pixels.shape == (2, SIZE, SIZE)
    assert "cannot write the image cache" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"image_size": 4}, "image_size=4"), ({"image_size": 32, "resize_mode": "crop"}, "resize_mode='crop'")],
)
def test_bad_settings_are_config_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PreprocessedCache(tmp_path, **kwargs)


def test_zero_workers_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workers=0"):
        PreprocessedCache(tmp_path, SIZE).load(_images(tmp_path / "img", 1), workers=0)


@pytest.mark.realdata
def test_reduced_scale_decoding_stays_close_to_a_full_decode(shared_data: Path, tmp_path: Path) -> None:
    """Draft decoding of the originals must not visibly change what the model sees."""
    from pneumocxr.imaging import read_image, resize_square

    originals = []
    for path in sorted((shared_data / "chest_xray" / "train" / "NORMAL").glob("*.jpeg")):
        with Image.open(path) as image:
            if min(image.size) >= 2 * 224:  # small enough a share that JPEG draft mode kicks in
                originals.append(_record(path))
        if len(originals) == 6:
            break
    if not originals:
        pytest.skip("no originals with both sides >= 448 px in the shared data")
    pixels = PreprocessedCache(tmp_path / "cache", 224).load(originals, workers=1)
    for row, record in zip(pixels, originals):
        full = resize_square(read_image(record.path), 224) * 255.0
        assert np.abs(row.astype(np.float32) - full).mean() < 3.0, record.path
