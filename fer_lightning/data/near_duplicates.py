"""Near-duplicate images, found when a dataset is split, so that no cluster of them straddles train / val / test.

Video frames a few milliseconds apart, burst shots and augmented copies shipped beside their originals put
near-copies of test images in training under a random split, and the test accuracy then measures memory.

Each image is reduced once to a 48 x 48 gray thumbnail, cached in ``.near_duplicates.npz`` beside the scan
cache and keyed by content SHA-1. Two images of one camera are compared by the Pearson correlation r of their
lightly blurred thumbnails at the best shift of up to one thumbnail pixel (2 % of the side, in quarter pixels); they
are near-duplicates when 1 - r is at most :data:`THRESHOLD` (1 %) of the camera's median 1 - r between two of its
images, so that the rule means the same for aligned thermal faces, which all look alike, as for varied photos. A
nearly flat image (a black frame) matches nothing: it has no content to compare. Two samples are near-duplicates
when either camera's images are; the clusters are the connected components of that relation.
docs/near-duplicates.md gives the threshold's measured margin.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fer_lightning.data.images import UnreadableImage, load_rgb
from fer_lightning.io import atomic_path, atomic_write_text, file_sha1

log = logging.getLogger(__name__)

COLUMN = "near_duplicate_group"
MODES = ("group", "warn", "off")
CACHE = ".near_duplicates.npz"
# with dataset.split.near_duplicates=warn: every sample of the clusters the split cuts
LISTING = "near_duplicates.csv"
_CACHE_VERSION = 1
SIDE = 48
SHIFT = 1
# shifts are tried in quarter pixels: in half pixels, copies of smooth (thermal) faces a quarter pixel apart came out
# as far apart as two people (docs/near-duplicates.md)
SUBPIXEL = 4
BLUR = 1.0
# A pair of one camera's images is a near-duplicate when its dissimilarity (1 - correlation) is at most this share
# of the camera's median dissimilarity between two of its images.
THRESHOLD = 0.01
# The first pass over every pair (8 x 8 block means, no shift) keeps each image's NEIGHBOURS nearest images and
# any within COARSE_THRESHOLD of its own median distance; only those pairs are compared in full. It kept every
# synthetic near-duplicate pair measured (docs/near-duplicates.md); a longer run of frames is linked through its
# members.
COARSE = 8
COARSE_THRESHOLD = 0.2
NEIGHBOURS = 8
# An image whose thumbnail varies less than this share of the camera's median image does is flat: no content.
FLAT = 0.3
# pairs drawn (seeded) to measure a camera's median dissimilarity
SCALE_SAMPLE = 1000
METHOD = (
    f"{SIDE}x{SIDE} gray thumbnails, blurred {BLUR:g} px; 1 - Pearson correlation at the best shift of up to "
    f"{SHIFT} px (in 1/{SUBPIXEL} px) <= {THRESHOLD:g} x the camera's median between two images, in either camera"
)
_PAIR_CHUNK = 2048


def thumbnail(path: Path) -> np.ndarray:
    """The (SIDE, SIDE) uint8 gray thumbnail an image is compared by; an undecodable file gets a flat one (it
    matches nothing here, and training names it when it reads it)."""
    try:
        gray = Image.fromarray(load_rgb(path, draft=2 * SIDE)).convert("L")
    except UnreadableImage:
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    return np.asarray(gray.resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.uint8)


def thumbnails(root: Path, files: Sequence[tuple[str, Path]]) -> np.ndarray:
    """The thumbnails of ``files`` (``(content sha1, path)``), from the cache or computed (in threads) and cached.

    The cache keeps exactly the contents asked for, so it never outgrows the dataset.
    """
    path = Path(root) / CACHE
    cached: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) == _CACHE_VERSION and data["thumbs"].shape[1:] == (SIDE, SIDE):
                cached = dict(zip(data["sha1"].tolist(), data["thumbs"], strict=True))
    except (OSError, ValueError, KeyError):
        pass
    todo = {sha1: p for sha1, p in files if sha1 not in cached}
    if todo:
        log.info("near-duplicate check: reading %d image(s)", len(todo))
        # PIL releases the GIL while decoding and resizing, so threads overlap it
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            cached.update(zip(todo, pool.map(thumbnail, todo.values()), strict=True))
    wanted = sorted({sha1 for sha1, _ in files})
    if todo or len(wanted) != len(cached):
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(
                tmp,
                version=np.array(_CACHE_VERSION),
                sha1=np.array(wanted, dtype=str),
                thumbs=np.stack([cached[s] for s in wanted]) if wanted else np.zeros((0, SIDE, SIDE), np.uint8),
            )
    return np.stack([cached[sha1] for sha1, _ in files]) if files else np.zeros((0, SIDE, SIDE), np.uint8)


def _normalized(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (one image each, flattened) with zero mean and unit norm."""
    x = x.reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def _weights() -> np.ndarray:
    """(positions, crops): the shifts tried, in steps of 1 / SUBPIXEL pixel up to SHIFT pixels each way, as
    bilinear weights on the whole-pixel crops (ordered as :attr:`_Shifts.steps`)."""
    steps = [(y, x) for y in range(-SHIFT, SHIFT + 1) for x in range(-SHIFT, SHIFT + 1)]
    grid = np.arange(-SHIFT * SUBPIXEL, SHIFT * SUBPIXEL + 1) / SUBPIXEL
    rows = []
    for y in grid:
        for x in grid:
            y0, x0 = min(int(np.floor(y)), SHIFT - 1), min(int(np.floor(x)), SHIFT - 1)
            wy, wx = y - y0, x - x0
            w = np.zeros(len(steps))
            w[steps.index((y0, x0))] += (1 - wy) * (1 - wx)
            w[steps.index((y0 + 1, x0))] += wy * (1 - wx)
            w[steps.index((y0, x0 + 1))] += (1 - wy) * wx
            w[steps.index((y0 + 1, x0 + 1))] += wy * wx
            rows.append(w)
    return np.array(rows, dtype=np.float32)


class _Shifts:
    """One camera's blurred thumbnails, ready for :meth:`similarity`: each image's centre (zero mean, unit norm)
    and the spread of each of its shifted crops. A shifted crop is a bilinear mix of whole-pixel crops, so a
    pair needs only the centre's dot products with the other image's whole-pixel crops; the crop's spread depends
    on that image alone and is computed once."""

    def __init__(self, t: np.ndarray):
        self.t = t
        n, end = len(t), SIDE - SHIFT
        self.steps = [(y, x) for y in range(-SHIFT, SHIFT + 1) for x in range(-SHIFT, SHIFT + 1)]
        self.windows = [(slice(SHIFT + y, end + y), slice(SHIFT + x, end + x)) for y, x in self.steps]
        self.centre = _normalized(t[:, SHIFT:end, SHIFT:end]).reshape(n, end - SHIFT, end - SHIFT)
        self.weights = _weights()
        size = (end - SHIFT) ** 2
        crops = [t[:, ys, xs] for ys, xs in self.windows]
        gram = np.empty((n, len(crops), len(crops)), dtype=np.float32)
        for a in range(len(crops)):
            for b in range(a, len(crops)):
                gram[:, a, b] = gram[:, b, a] = np.einsum("nyx,nyx->n", crops[a], crops[b])
        total = np.stack([c.sum(axis=(1, 2)) for c in crops], axis=1)
        mean = total @ self.weights.T / size
        norm2 = np.einsum("pk,nkl,pl->np", self.weights, gram, self.weights)
        self.spread = np.sqrt(np.maximum(norm2 - size * mean**2, 1e-6))  # (images, positions)

    def similarity(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The correlation of image ``i``'s centre with image ``j`` at the best shift (pairwise over the arrays)."""
        out = np.empty(len(i), dtype=np.float32)
        for start in range(0, len(i), _PAIR_CHUNK):
            a, b = i[start : start + _PAIR_CHUNK], j[start : start + _PAIR_CHUNK]
            centre, other = self.centre[a], self.t[b]
            dots = np.stack([np.einsum("pyx,pyx->p", centre, other[:, ys, xs]) for ys, xs in self.windows], axis=1)
            out[start : start + len(a)] = (dots @ self.weights.T / self.spread[b]).max(axis=1)
        return out


def distances(
    thumbs: np.ndarray, coarse_threshold: float = COARSE_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs ``(i, j)``, i < j, of one camera's thumbnails that pass the coarse pass, with their distance:
    1 - correlation over the camera's median of it (so :data:`THRESHOLD` means the same for a camera whose images
    all look alike, such as aligned thermal faces, as for one whose images differ). Flat images pair with none."""
    n = len(thumbs)
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
    if n < 2:  # e.g. a camera a visible-only dataset does not have
        return none
    t = ndimage.gaussian_filter(thumbs.astype(np.float32), sigma=(0, BLUR, BLUR))
    contrast = t.reshape(n, -1).std(axis=1)
    usable = np.flatnonzero(contrast > FLAT * np.median(contrast))
    if len(usable) < 2:
        return none
    shifts = _Shifts(t)
    block_side = SIDE // COARSE
    coarse = _normalized(t.reshape(n, COARSE, block_side, COARSE, block_side).mean(axis=(2, 4)))
    rng = np.random.default_rng(0)
    a, b = rng.choice(usable, (2, SCALE_SAMPLE))
    a, b = a[a != b], b[a != b]
    if not len(a):  # two usable images
        a, b = usable[:1], usable[1:2]
    fine_scale = max(float(np.median(1 - shifts.similarity(a, b))), 1e-6)
    coarse_scale = max(float(np.median(1 - np.einsum("pd,pd->p", coarse[a], coarse[b]))), 1e-6)
    ok = np.zeros(n, dtype=bool)
    ok[usable] = True
    rows, cols = [], []
    for start in range(0, n, 512):
        block = 1 - coarse[start : start + 512] @ coarse.T
        block[:, ~ok] = np.inf
        block[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        k = min(NEIGHBOURS, n - 1)
        kth = np.partition(block, k - 1, axis=1)[:, k - 1 : k]  # each image's k-th nearest
        i, j = np.nonzero((block <= np.maximum(coarse_threshold * coarse_scale, kth)) & np.isfinite(block))
        i += start
        keep = ok[i]
        rows.append(np.minimum(i[keep], j[keep]))
        cols.append(np.maximum(i[keep], j[keep]))
    i, j = np.unique(np.stack([np.concatenate(rows), np.concatenate(cols)]), axis=1)
    return i, j, (1 - shifts.similarity(i, j)) / fine_scale


def clusters(root: Path, rows: Sequence[dict], cameras: Sequence[str] = ("visible", "infrared")) -> list[str]:
    """One cluster id per row (``"1"``, ``"2"`` ... in the order of each cluster's first row; ``""`` for a row
    with no near-duplicate). Image paths are relative to ``root``; a row's ``<camera>_sha1`` is used when set."""
    root = Path(root)
    edges_i, edges_j = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    have = {c: [n for n, r in enumerate(rows) if r.get(c)] for c in cameras}
    files = [
        (rows[n].get(f"{c}_sha1") or file_sha1(root / rows[n][c]), root / rows[n][c]) for c in cameras for n in have[c]
    ]
    thumbs = thumbnails(root, files)  # one call: the cache keeps what it is asked for
    start = 0
    for c in cameras:
        index = np.asarray(have[c], dtype=np.int64)
        i, j, distance = distances(thumbs[start : start + len(index)])
        match = distance <= THRESHOLD
        edges_i.append(index[i[match]])
        edges_j.append(index[j[match]])
        first: dict[str, int] = {}  # identical content always joins, flat or not
        same = [
            first.setdefault(sha1, n) for n, (sha1, _) in zip(index, files[start : start + len(index)], strict=True)
        ]
        edges_i.append(np.array(same, dtype=np.int64))
        edges_j.append(index)
        start += len(index)
    n = len(rows)
    i, j = np.concatenate(edges_i), np.concatenate(edges_j)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component, minlength=n)
    ids: dict[int, str] = {}
    out = []
    for c in component:
        if sizes[c] < 2:
            out.append("")
            continue
        out.append(ids.setdefault(int(c), str(len(ids) + 1)))
    return out


def with_clusters(root: Path, rows: list[dict]) -> list[dict]:
    """``rows`` with the :data:`COLUMN` cell filled in (copies)."""
    return [dict(r, **{COLUMN: c}) for r, c in zip(rows, clusters(root, rows), strict=True)]


def stats(rows: Sequence[dict]) -> dict:
    """What prepare.json and the summary report: clusters, the samples in them, their share, the threshold."""
    in_clusters = [r.get(COLUMN) for r in rows if r.get(COLUMN)]
    sizes = defaultdict(int)
    for c in in_clusters:
        sizes[c] += 1
    return {
        "clusters": len(sizes),
        "samples_in_clusters": len(in_clusters),
        "share": round(len(in_clusters) / len(rows), 4) if rows else 0.0,
        "largest": max(sizes.values(), default=0),
        "threshold": THRESHOLD,
        "method": METHOD,
    }


def straddling(rows: Sequence[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{cluster: {split: [rows]}}`` for every cluster whose rows lie in more than one split."""
    by_cluster: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get(COLUMN):
            by_cluster[r[COLUMN]][r["split"]].append(r)
    return {c: dict(splits) for c, splits in by_cluster.items() if len(splits) > 1}


def shared_share(rows: Sequence[dict], tested: Sequence[str], split: str = "test") -> float | None:
    """The share of the ``tested`` sample ids whose cluster also has a sample the model trained on: in train, or
    in val when ``split`` is test (val chose the checkpoint). None when the clusters are unknown (``off`` on a
    manifest written before near-duplicates were checked)."""
    if not rows or COLUMN not in rows[0]:
        return None
    trained_on = {"train"} if split == "val" else {"train", "val"}
    seen = {r.get(COLUMN) for r in rows if r["split"] in trained_on and r.get(COLUMN)}
    cluster_of = {r["sample_id"]: r.get(COLUMN) for r in rows}
    if not tested:
        return 0.0
    return round(sum(1 for s in tested if cluster_of.get(s) and cluster_of[s] in seen) / len(tested), 4)


def record(root: Path, rows: Sequence[dict], mode: str, state: Path) -> dict | None:
    """Writes :func:`stats` (and ``mode``) into the dataset's ``state`` file (prepare.json) when they changed; with
    ``warn``, lists the clusters the split cuts in :data:`LISTING` and says so in one warning. Writes nothing
    when the clusters are unknown (see :func:`shared_share`)."""
    if not rows or COLUMN not in rows[0]:
        return None
    info = {**stats(rows), "mode": mode}
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        data = {}
    if data.get("near_duplicates") != info:
        data["near_duplicates"] = info
        atomic_write_text(state, json.dumps(data, indent=2) + "\n")
    listing = root / LISTING
    cut = straddling(rows) if mode == "warn" else {}
    if not cut:
        listing.unlink(missing_ok=True)
        return info
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([COLUMN, "split", "sample_id", "visible", "infrared"])
    order = sorted(cut, key=lambda c: (len(c), c))  # 2 before 10
    for cluster in order:
        for split, members in sorted(cut[cluster].items(), key=lambda kv: ("train", "val", "test").index(kv[0])):
            writer.writerows(
                [cluster, split, r["sample_id"], r.get("visible", ""), r.get("infrared", "")] for r in members
            )
    text = buf.getvalue()
    if not listing.is_file() or listing.read_text() != text:
        atomic_write_text(listing, text)
    first = order[0]
    example = "; ".join(
        f"{split}: {', '.join(r['sample_id'] for r in members)}" for split, members in cut[first].items()
    )
    log.warning(
        "%d near-duplicate cluster(s) of %d samples straddle the train/val/test splits "
        "(dataset.split.near_duplicates=warn), e.g. cluster %s (%s); each is listed in %s; "
        "dataset.split.near_duplicates=group keeps every cluster in one split",
        len(cut),
        sum(len(m) for splits in cut.values() for m in splits.values()),
        first,
        example,
        listing,
    )
    return info
