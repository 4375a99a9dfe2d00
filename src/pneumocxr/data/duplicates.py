"""Exact and near-duplicate images: content digests, perceptual hashes and Hamming-distance grouping.

Duplicates matter because a copy of an image on both sides of a split inflates every metric
measured there. Exact copies are found by the sha256 of the file's bytes. Near copies (the same
radiograph re-encoded or resized) are found by a perceptual hash (``imagehash.phash``) of the
image decoded small, compared by Hamming distance.

Why a 256-bit hash (``hash_size=16``) and not imagehash's default 64 bits: chest X-rays share
one low-frequency layout (mediastinum, two lung fields), so 64-bit phashes of *different*
children collide. Measured on the Kermany train+val images (5,232 files): with 64 bits, 9 of the
12 pairs at distance 2 and all 174 pairs at distance 4 were different patients. With 256 bits,
the 28 pairs at distance <= 12 (18 at 0, 5 at 2, 3 at 4, 1 at 6, 1 at 12) are all one child's
image saved twice — byte-identical, or a 768-px original beside its 224-px resize (mean absolute
difference <= 1.8/255 at 64 px) — and the next closest pair is at 38, two different children.
``DEFAULT_NEAR_THRESHOLD`` = 24 sits in the middle of that gap (a JPEG of the synthetic test
images re-saved at quality 30–90 lands at 6–12).

All pairs are compared (n² / 2 XOR + popcount on packed ``uint64`` words, in row blocks so
memory stays bounded): 5k images take about half a second.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.errors import ConfigError, PneumoCXRError
from pneumocxr.imaging import resize_square
from pneumocxr.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

DEFAULT_HASH_SIZE = 16  # phash side: 16 → 256-bit hashes (see the module docstring for why not 8)
DEFAULT_NEAR_THRESHOLD = 24  # max Hamming distance (of 256 bits) for "near duplicate"; real data gap 12..38
_POOL_MIN_IMAGES = 32  # below this a process pool costs more than it saves
_MAX_TASK = 32  # images per worker task
_BLOCK_ELEMENTS = 1 << 22  # uint64 words compared per block (~32 MB of XOR results)


@dataclass(frozen=True)
class Fingerprint:
    """What the duplicate search needs from one image; ``reason`` is set when it could not be read."""

    digest: str | None  # sha256 of the file's bytes (of the decoded pixels for an archive row)
    phash: np.ndarray | None  # (hash_size² / 64,) uint64, the packed perceptual hash
    reason: str | None = None  # why the image is unreadable; None when it was read


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of each other (``exact``) or of the same radiograph (``near``)."""

    kind: str  # "exact" | "near"
    paths: tuple[str, ...]  # display names, sorted
    splits: tuple[str, ...]  # distinct splits the copies are in
    labels: tuple[str, ...]  # distinct class names: more than one means contradictory labels
    patients: tuple[str, ...]  # distinct patient ids
    max_distance: int  # largest Hamming distance on a linking pair (0 for exact groups)

    @property
    def cross_split(self) -> bool:
        """True when copies sit in different splits: leakage between them."""
        return len(self.splits) > 1

    @property
    def same_patient(self) -> bool:
        return len(self.patients) == 1

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "paths": list(self.paths),
            "splits": list(self.splits),
            "labels": list(self.labels),
            "patients": list(self.patients),
            "cross_split": self.cross_split,
            "same_patient": self.same_patient,
            "max_distance": self.max_distance,
        }


def fingerprint(record: ImageRecord, hash_size: int = DEFAULT_HASH_SIZE) -> Fingerprint:
    """sha256 and perceptual hash of one image; UnsupportedImageError/OSError when unreadable.

    The image is decoded at reduced scale (``min_size``): phash only looks at a
    ``4·hash_size``-pixel square, so decoding a 2,900-px original in full would be wasted work.
    """
    import imagehash
    from PIL import Image

    side = 4 * hash_size
    if record.member is None:
        with open(record.path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        pixels = load_pixels(record, min_size=side)
    else:
        pixels = load_pixels(record)
        digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    small = resize_square(pixels, side, mode="squash")
    image = Image.fromarray(np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8), mode="L")
    bits = imagehash.phash(image, hash_size=hash_size).hash.reshape(-1)
    return Fingerprint(digest, pack_bits(bits))


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Booleans → uint64 words (zero-padded to a multiple of 64 bits), for XOR + popcount."""
    padded = np.zeros(-(-bits.size // 64) * 64, dtype=bool)
    padded[: bits.size] = bits
    return np.packbits(padded).view(np.uint64)


def _fingerprint_batch(records: Sequence[ImageRecord], hash_size: int) -> list[Fingerprint]:
    """Fingerprints of a batch (runs in a worker process); a user's bad file becomes a reason."""
    results = []
    for record in records:
        try:
            results.append(fingerprint(record, hash_size))
        except PneumoCXRError as exc:
            results.append(Fingerprint(None, None, getattr(exc, "reason", None) or str(exc)))
        except OSError as exc:
            results.append(Fingerprint(None, None, f"cannot read the file ({exc.strerror or exc})"))
    return results


def fingerprint_all(
    records: Sequence[ImageRecord], *, hash_size: int = DEFAULT_HASH_SIZE, workers: int | None = None
) -> list[Fingerprint]:
    """Fingerprints in record order; ``workers`` processes (None = one per available CPU)."""
    if hash_size < 2:
        raise ConfigError(f"hash_size={hash_size}; use at least 2 (16 = 256-bit hashes is the default)")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers={workers}; use 1 or more, or None for one per CPU")
    workers = _available_cpus() if workers is None else workers
    if workers == 1 or len(records) < _POOL_MIN_IMAGES:
        return _fingerprint_batch(records, hash_size)
    task = max(1, min(_MAX_TASK, len(records) // (4 * workers)))
    batches = [records[i : i + task] for i in range(0, len(records), task)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(batches))) as pool:
        parts = pool.map(_fingerprint_batch, batches, [hash_size] * len(batches))
        return [fp for part in parts for fp in part]


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def hamming_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """All pairs ``i < j`` with Hamming distance <= ``threshold``: (M, 3) int64 rows ``i, j, d``.

    ``hashes`` is (N, W) uint64. Rows are compared in blocks against everything after them, so
    memory stays near ``_BLOCK_ELEMENTS`` words whatever N is.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n, words = hashes.shape
    block = max(1, _BLOCK_ELEMENTS // max(1, n * words))
    found = []
    for start in range(0, n, block):
        head = hashes[start : start + block]  # (b, W)
        tail = hashes[start:]  # (n - start, W)
        distance = np.bitwise_count(head[:, None, :] ^ tail[None, :, :]).sum(axis=-1, dtype=np.int64)
        rows, cols = np.nonzero(distance <= threshold)  # (b, n - start) → indices of close pairs
        keep = rows < cols
        rows, cols = rows[keep], cols[keep]
        found.append(np.stack([rows + start, cols + start, distance[rows, cols]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 3), dtype=np.int64)


def exact_groups(records: Sequence[ImageRecord], digests: Sequence[str | None]) -> list[DuplicateGroup]:
    """Groups of records whose bytes are identical (``None`` digests, i.e. unreadable, are ignored)."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(digests):
        if digest is not None:
            by_digest[digest].append(index)
    members = [indices for indices in by_digest.values() if len(indices) > 1]
    return sorted((_group("exact", records, m, 0) for m in members), key=lambda g: g.paths)


def near_groups(
    records: Sequence[ImageRecord], digests: Sequence[str | None], pairs: np.ndarray
) -> tuple[list[DuplicateGroup], int]:
    """Connected components of the near-pair graph that hold at least two *different* files.

    Returns the groups and the number of near pairs whose bytes differ (byte-identical pairs are
    already reported as exact groups).
    """
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    distinct_pairs = 0
    for i, j, _ in pairs.tolist():
        parent[root(i)] = root(j)
        distinct_pairs += digests[i] != digests[j]
    components: dict[int, list[int]] = defaultdict(list)
    for i in {int(k) for k in pairs[:, :2].reshape(-1)}:
        components[root(i)].append(i)
    max_distance: dict[int, int] = defaultdict(int)
    for i, _, d in pairs.tolist():
        max_distance[root(i)] = max(max_distance[root(i)], d)
    groups = [
        _group("near", records, sorted(members), max_distance[key])
        for key, members in components.items()
        if len({digests[m] for m in members}) > 1
    ]
    return sorted(groups, key=lambda g: g.paths), distinct_pairs


def _group(
    kind: str, records: Sequence[ImageRecord], members: Sequence[int], distance: int
) -> DuplicateGroup:
    chosen = [records[m] for m in members]
    return DuplicateGroup(
        kind=kind,
        paths=tuple(sorted(r.display_name for r in chosen)),
        splits=tuple(sorted({r.split for r in chosen})),
        labels=tuple(sorted({_class_name(r.label) for r in chosen})),
        patients=tuple(sorted({r.patient_id for r in chosen})),
        max_distance=int(distance),
    )


def _class_name(label: int) -> str:
    return CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else str(label)
