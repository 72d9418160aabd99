"""Gallery-scale benchmark: USearch HNSW vs exact search with up to 1 M enrolled voiceprints.

    python bench/gallery.py [--sizes 1000,100000,1000000] [--small] [--out bench/out]
        [--configs 16:128,32:256] [--ef-search 64,128,256,512] [--startup-only]

The gallery is made of *real* CAM++ embeddings of real speech (``shared/speech``: whole
files and half-overlapping 2 s crops of their VAD speech, cached in
``CACHE/gallery-emb-<model id>-*.npy``) plus perturbed copies of them, never uniform
random vectors. A copy is
``normalise(v + sigma * noise)`` where ``noise`` is Gaussian with the *within-speaker*
covariance of the real embeddings (so copies vary the way one voice varies between
utterances, inside the space real voices occupy; ``--noise isotropic`` uses white noise
instead) and ``sigma`` is set so the median distance of a copy from its source equals the
median distance between two different utterances of one speaker (measured, reported
under ``data``). Speakers are split three ways: gallery speakers (some of their files in
the gallery), the same speakers' other files (genuine queries, never in the gallery), and
never-enrolled speakers (all 100 LibriSpeech train-clean voices plus one in four speakers
of every other corpus: the impostor queries). Queries are those real vectors plus
perturbed copies of them, half from enrolled and half from never-enrolled speakers.

Measured at each gallery size N (``distance`` = Euclidean between unit vectors, converted
from USearch's ``l2sq`` only through :mod:`streamer.units`):

* exact search: USearch ``exact=True`` (what the registry does up to
  ``EXACT_SEARCH_MAX_VECTORS``), single-query latency p50 / p99; its recall@1 against a
  numpy brute force is the sanity check (1.0);
* each HNSW configuration (``connectivity:expansion_add[:dtype]``, metric ``l2sq``,
  keys and unit float32 vectors as in ``streamer/registry.py``): build time (all cores,
  as the registry's rebuild), index memory (``memory_usage``), serialised size, RSS
  growth, and for each ``expansion_search``: single-query latency p50 / p99 (one vector
  per call with ``k = match.top_k``, as the server searches), recall@1 against exact
  (all queries, enrolled speakers', never-enrolled speakers'), how often the top-1 is the
  same real voice (source or copy) as exact's, and how often the decision at the
  threshold (that person, or nobody) is the same as exact's;
* open set at ``match.max_distance`` (from ``--config``): the share of never-enrolled
  queries whose nearest gallery vector lies within the threshold (false accepts), from
  exact search and from the registry's own index, and the nearest-impostor distances;
* start-up of a real :class:`streamer.registry.Registry` holding N people: the first
  ``--api-people`` enrolled through ``add_person`` (the public API), the rest written to
  its SQLite file in one transaction with the same tables and values; then
  ``Registry.open()`` with no index cache (reads SQLite, centroids, builds the index,
  saves the cache: the rebuild path) and ``Registry.open()`` with the saved cache (the
  load path), the first search, and for comparison ``Index.restore`` (load) and
  ``Index.restore(view=True)`` (memory-mapped) of the saved file.

The registry's own index parameters (``streamer.registry.INDEX_*``) are always among the
configurations; ``choose`` picks the parameters from the largest N (see its docstring).
Prints tables; writes ``OUT/gallery.json`` and ``OUT/gallery.png`` (latency and recall
against N; needs matplotlib, ``pip install -e '.[tools]'``). ``--small`` is the CI run
(sizes 1000 and 5000, a few hundred embeddings, well under a minute). Progress goes to
stderr.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # numpy next to onnxruntime and usearch on 2 cores

import argparse
import gc
import hashlib
import json
import math
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import usearch
from usearch.compiled import MetricKind
from usearch.index import Index
from usearch.index import search as brute_force_search

from streamer import registry as registry_module
from streamer.config import REPO_ROOT, Config, MatchConfig, load_config
from streamer.embedder import Embedder
from streamer.evaluation import SAMPLE_RATE, load_manifest, read_audio
from streamer.registry import SqliteRegistry as Registry
from streamer.registry import replica as replica_module
from streamer.segmenter import extract_speech
from streamer.units import distance_to_l2sq, l2sq_to_distance

#: Single-speaker corpora embedded for the gallery and the queries.
DATASETS = [
    "librispeech_testother_10spk",
    "librispeech_trainclean100_251spk_1utt",
    "commonvoice_fa",
    "aishell1_2spk",
    "vctk_4spk",
    "speechcommands_v002test_80spk",
    "ami_pyannote_diarization",  # its solo segments; whole meetings have several speakers
]
#: Every speaker of this corpus is a never-enrolled voice (impostor).
IMPOSTOR_DATASET = "librispeech_trainclean100_251spk_1utt"
#: ... and so is one speaker in IMPOSTOR_EVERY (sorted) of every other corpus.
IMPOSTOR_EVERY = 4
#: The server ignores speech shorter than this (segment.min_segment_s).
MIN_ITEM_S = 1.0
CROP_S = 2.0
#: Crops start every CROP_HOP_S seconds (half-overlapping), at most MAX_CROPS per file.
CROP_HOP_S = 1.0
MAX_CROPS = 10
WHOLE_CAP_S = 10.0
SEED = 5
#: HNSW configurations compared by default: ``connectivity:expansion_add[:dtype]``.
DEFAULT_CONFIGS = "16:128,32:256"
DEFAULT_EF_SEARCH = "64,128,256,512"
#: Target of issue 5, at 1 M voiceprints.
TARGET_MS = 2.0
TARGET_RECALL = 0.99
#: Thresholds (distance) at which open-set false accepts are also reported.
FAR_THRESHOLDS = (0.9, 0.95, 1.0)


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pctl(values: Sequence[float] | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else math.nan


def r4(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), 4)


def distances(l2sq: np.ndarray) -> np.ndarray:
    """USearch / numpy ``l2sq`` values as protocol ``distance`` (through streamer.units)."""
    flat = [l2sq_to_distance(float(v)) for v in np.asarray(l2sq).ravel()]
    return np.asarray(flat, dtype=np.float64).reshape(np.shape(l2sq))


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


# -- real embeddings ----------------------------------------------------------------------


@dataclass
class Embeddings:
    """Real embeddings and, per row, its corpus, speaker, file and kind (whole / crop)."""

    vectors: np.ndarray  # (n, dim) float32, unit
    dataset: np.ndarray  # (n,) str
    speaker: np.ndarray  # (n,) str, "dataset/speaker"
    file: np.ndarray  # (n,) str
    kind: np.ndarray  # (n,) str


def items_of(x: np.ndarray, small: bool) -> list[tuple[str, np.ndarray]]:
    """The pieces of one file's speech that are embedded: the whole (capped) and 2 s crops."""
    crop, hop = int(CROP_S * SAMPLE_RATE), int(CROP_HOP_S * SAMPLE_RATE)
    out: list[tuple[str, np.ndarray]] = []
    if not small:
        out.append(("whole", x[: int(WHOLE_CAP_S * SAMPLE_RATE)]))
    if small:  # three non-overlapping crops at most
        out += [("crop", x[i * crop:(i + 1) * crop]) for i in range(min(len(x) // crop, 3))]
    elif len(x) >= 2 * crop:
        starts = range(0, len(x) - crop + 1, hop)[:MAX_CROPS]
        out += [("crop", x[a:a + crop]) for a in starts]
    if not out:
        out.append(("whole", x[: int(WHOLE_CAP_S * SAMPLE_RATE)]))
    return out


def select_files(speech_dir: Path, small: bool) -> list[tuple[str, Any]]:
    """(dataset, Utterance) of single-speaker files; a few per corpus with ``small``."""
    files: list[tuple[str, Any]] = []
    for name in DATASETS:
        if small and name not in ("librispeech_testother_10spk", IMPOSTOR_DATASET):
            continue
        utts = [u for u in load_manifest(speech_dir / name) if "," not in u.speaker]
        if small:  # 3 files of each LibriSpeech test-other speaker, 16 impostor voices
            if name == IMPOSTOR_DATASET:
                utts = utts[:16]
            else:
                per: dict[str, int] = {}
                keep = []
                for u in utts:
                    if per.get(u.speaker, 0) < 3:
                        keep.append(u)
                        per[u.speaker] = per.get(u.speaker, 0) + 1
                utts = keep
        files += [(name, u) for u in utts]
    return files


def load_embeddings(cfg: Config, speech_dir: Path, cache_dir: Path,
                    small: bool) -> tuple[Embeddings, str]:
    """Embed the selected files (or read the cache); returns the embeddings and model id."""
    emb = Embedder(cfg.model_path, threads=1)
    emb.load()
    files = select_files(speech_dir, small)
    spec = json.dumps([DATASETS, MIN_ITEM_S, CROP_S, CROP_HOP_S, MAX_CROPS, WHOLE_CAP_S, small,
                       [str(u.path.relative_to(speech_dir)) for _, u in files],
                       repr(cfg.vad)],
                      sort_keys=True, default=str)
    tag = hashlib.sha256(spec.encode()).hexdigest()[:10]
    stem = cache_dir / f"gallery-emb-{emb.model_id}-{tag}"
    npy, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        vectors = np.load(npy)
        log(f"embeddings: {len(vectors)} from cache {npy}")
    else:
        vectors_list: list[np.ndarray] = []
        meta = {"dataset": [], "speaker": [], "file": [], "kind": []}
        t0 = time.perf_counter()
        audio_s = 0.0
        for k, (name, u) in enumerate(files):
            raw = read_audio(u.path)
            x = extract_speech(raw, cfg.vad)
            if len(x) < MIN_ITEM_S * SAMPLE_RATE:
                x = raw  # Speech Commands words: the VAD keeps less than a second
            if len(x) < MIN_ITEM_S * SAMPLE_RATE:
                continue
            items = items_of(x, small)
            vecs = emb.embed_batch([a for _, a in items])
            audio_s += sum(len(a) for _, a in items) / SAMPLE_RATE
            for (kind, _), v in zip(items, vecs):
                vectors_list.append(v)
                meta["dataset"].append(name)
                meta["speaker"].append(f"{name}/{u.speaker}")
                meta["file"].append(str(u.path.relative_to(speech_dir)))
                meta["kind"].append(kind)
            if k % 50 == 0 or k == len(files) - 1:
                sys.stderr.write(f"\r  embedding: {k + 1}/{len(files)} files, "
                                 f"{len(vectors_list)} vectors, {audio_s:.0f} s audio "
                                 f"({time.perf_counter() - t0:.0f} s)  ")
                sys.stderr.flush()
        sys.stderr.write("\n")
        vectors = np.stack(vectors_list).astype(np.float32)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(npy, vectors)
        meta_path.write_text(json.dumps(meta))
        log(f"embeddings: {len(vectors)} cached in {npy}")
    e = Embeddings(unit_rows(vectors), *(np.asarray(meta[k]) for k in
                                          ("dataset", "speaker", "file", "kind")))
    return e, emb.model_id


# -- split, perturbation ------------------------------------------------------------------


@dataclass
class Split:
    sources: np.ndarray  # row indices: gallery vectors (real)
    genuine: np.ndarray  # row indices: held-out files of gallery speakers
    impostor: np.ndarray  # row indices: never-enrolled speakers


def split(e: Embeddings) -> Split:
    """Gallery speakers' first files -> gallery, their last third -> genuine queries;
    impostor speakers (IMPOSTOR_DATASET, one in IMPOSTOR_EVERY elsewhere) -> impostors."""
    impostors: set[str] = set()
    for ds in dict.fromkeys(e.dataset.tolist()):
        spk = sorted(set(e.speaker[e.dataset == ds].tolist()))
        if ds == IMPOSTOR_DATASET:
            impostors.update(spk)
        elif len(spk) >= IMPOSTOR_EVERY:
            impostors.update(spk[IMPOSTOR_EVERY - 1::IMPOSTOR_EVERY])
    sources: list[int] = []
    genuine: list[int] = []
    impostor: list[int] = []
    for spk in dict.fromkeys(e.speaker.tolist()):
        rows = np.flatnonzero(e.speaker == spk)
        if spk in impostors:
            impostor += rows.tolist()
            continue
        files = list(dict.fromkeys(e.file[rows].tolist()))
        held = set(files[len(files) - len(files) // 3:]) if len(files) >= 2 else set()
        for r in rows:
            (genuine if e.file[r] in held else sources).append(int(r))
    return Split(np.array(sources), np.array(genuine), np.array(impostor))


def within_speaker_distances(e: Embeddings, rows: np.ndarray) -> np.ndarray:
    """Distances between two items of one speaker from *different* files (utterances)."""
    out = []
    for spk in dict.fromkeys(e.speaker[rows].tolist()):
        r = rows[e.speaker[rows] == spk]
        if len(r) < 2:
            continue
        v = e.vectors[r]
        l2 = pairwise_l2sq(v, v)
        diff_file = e.file[r][:, None] != e.file[r][None, :]
        iu = np.triu_indices(len(r), 1)
        out.append(l2[iu][diff_file[iu]])
    return distances(np.concatenate(out)) if out else np.zeros(0)


def between_speaker_distances(e: Embeddings, rows: np.ndarray, n: int,
                              rng: np.random.Generator) -> np.ndarray:
    a, b = rng.choice(rows, n), rng.choice(rows, n)
    keep = e.speaker[a] != e.speaker[b]
    diff = e.vectors[a[keep]] - e.vectors[b[keep]]
    return distances(np.einsum("ij,ij->i", diff, diff))


def pairwise_l2sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``l2sq`` between the rows of ``a`` and ``b`` (float32 matmul, clamped at 0)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    l2 = (np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :]
          - 2.0 * (a @ b.T))
    out: np.ndarray = np.maximum(l2, 0.0)
    return out


class Perturber:
    """``normalise(v + sigma * noise)``, noise Gaussian with the within-speaker covariance
    (or white), sigma calibrated to a target median distance from the source."""

    def __init__(self, e: Embeddings, rows: np.ndarray, kind: str, target: float,
                 rng: np.random.Generator) -> None:
        dim = e.vectors.shape[1]
        if kind == "speaker":
            resid = []
            for spk in dict.fromkeys(e.speaker[rows].tolist()):
                v = e.vectors[rows[e.speaker[rows] == spk]].astype(np.float64)
                if len(v) >= 2:
                    resid.append(v - v.mean(axis=0))
            r = np.concatenate(resid)
            cov = r.T @ r / len(r)
            w, q = np.linalg.eigh(cov)
            # noise = z @ root: covariance `cov`, scaled to E|noise|^2 = 1
            self.root = (q * np.sqrt(np.maximum(w, 0.0))).T / math.sqrt(float(np.trace(cov)))
        else:
            self.root = np.eye(dim) / math.sqrt(dim)
        self.kind = kind
        self.rng = rng
        probe = e.vectors[rng.choice(rows, min(2000, len(rows)))]
        lo, hi = 0.0, 4.0
        z = rng.standard_normal((len(probe), dim))
        for _ in range(40):  # bisection: median copy-source distance -> target
            mid = (lo + hi) / 2
            d = self._median_distance(probe, z, mid)
            lo, hi = (mid, hi) if d < target else (lo, mid)
        self.sigma = (lo + hi) / 2

    def _median_distance(self, v: np.ndarray, z: np.ndarray, sigma: float) -> float:
        c = unit_rows(v + sigma * (z @ self.root))
        diff = c - v
        return float(np.median(distances(np.einsum("ij,ij->i", diff, diff))))

    def copies(self, v: np.ndarray) -> np.ndarray:
        z = self.rng.standard_normal(v.shape)
        return unit_rows(v.astype(np.float64) + self.sigma * (z @ self.root))


def gallery_chunks(src: np.ndarray, n: int, pert: Perturber,
                   chunk: int = 100_000) -> Iterator[np.ndarray]:
    """N gallery vectors: the real sources first (in a fixed shuffled order), then copies
    of source ``i mod len(src)``."""
    if n <= len(src):
        yield src[:n]
        return
    yield src
    made = len(src)
    while made < n:
        m = min(chunk, n - made)
        idx = np.arange(made, made + m) % len(src)
        yield pert.copies(src[idx])
        made += m


# -- exact search ground truth ------------------------------------------------------------


def exact_nearest(queries: np.ndarray, gallery: np.ndarray, chunk: int = 32768
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute force (numpy, float32): for every query the nearest gallery row, its ``l2sq``
    and the ``l2sq`` of the second nearest."""
    nq = len(queries)
    best = np.full((nq, 2), np.inf, dtype=np.float32)
    arg = np.zeros((nq, 2), dtype=np.int64)
    qn = np.einsum("ij,ij->i", queries, queries)[:, None]
    for start in range(0, len(gallery), chunk):
        g = gallery[start:start + chunk]
        l2 = qn + np.einsum("ij,ij->i", g, g)[None, :] - 2.0 * (queries @ g.T)
        if l2.shape[1] > 2:
            j = np.argpartition(l2, 1, axis=1)[:, :2]
        else:
            j = np.broadcast_to(np.arange(l2.shape[1]), (nq, l2.shape[1]))
        vals = np.concatenate([best, np.take_along_axis(l2, j, 1)], axis=1)
        keys = np.concatenate([arg, j + start], axis=1)
        o = np.argsort(vals, axis=1, kind="stable")[:, :2]
        best, arg = np.take_along_axis(vals, o, 1), np.take_along_axis(keys, o, 1)
        if len(gallery) > 200_000 and (start // chunk) % 8 == 0:
            sys.stderr.write(f"\r  exact ground truth: {start + len(g)}/{len(gallery)}  ")
            sys.stderr.flush()
    if len(gallery) > 200_000:
        sys.stderr.write("\n")
    best = np.maximum(best, 0.0)
    return arg[:, 0], best[:, 0], best[:, 1]


def hits(keys: np.ndarray, l2sq: np.ndarray, truth_key: np.ndarray,
         truth_l2sq: np.ndarray) -> np.ndarray:
    """Top-1 agrees with exact: same key, or a tie in distance (float rounding)."""
    ok: np.ndarray = (keys == truth_key) | (l2sq <= truth_l2sq + 1e-5)
    return ok


def time_searches(index: Index, queries: np.ndarray, k: int, exact: bool = False,
                  warmup: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ``search`` call per query; returns (latency seconds, top-1 key, top-1 l2sq)."""
    for q in queries[:warmup]:
        index.search(q, k, exact=exact)
    lat = np.empty(len(queries))
    keys = np.empty(len(queries), dtype=np.int64)
    l2 = np.empty(len(queries), dtype=np.float64)
    clock = time.perf_counter
    gc.disable()  # no collector pauses inside the timed calls
    try:
        for i, q in enumerate(queries):
            t = clock()
            m = index.search(q, k, exact=exact)
            lat[i] = clock() - t
            keys[i], l2[i] = ((int(m.keys[0]), float(m.distances[0])) if len(m.keys)
                              else (-1, math.inf))
    finally:
        gc.enable()
    return lat, keys, l2


class _Rescored:
    """An int8 / bf16 ``index`` searched as the registry searches it: its top
    RESCORE_K candidates re-scored in float32 against ``gallery`` (keys are rows)."""

    def __init__(self, index: Index, gallery: np.ndarray) -> None:
        self.index, self.gallery = index, gallery

    def search(self, q: np.ndarray, k: int, exact: bool = False) -> Any:
        m = self.index.search(q, max(k, RESCORE_K), exact=exact)
        keys = np.asarray(m.keys, dtype=np.int64)
        found = brute_force_search(self.gallery[keys], q, min(k, len(keys)), MetricKind.L2sq,
                                   exact=True)
        return _Found(keys[np.asarray(found.keys, dtype=np.int64)],
                      np.asarray(found.distances))


@dataclass
class _Found:
    keys: np.ndarray
    distances: np.ndarray


class _BruteForce:
    """``search`` over a plain matrix with USearch's exact kernel (no index to build)."""

    def __init__(self, gallery: np.ndarray) -> None:
        self.gallery = gallery

    def search(self, q: np.ndarray, k: int, exact: bool = True) -> Any:
        return brute_force_search(self.gallery, q, k, MetricKind.L2sq, exact=True)


def recall_summary(keys: np.ndarray, l2sq: np.ndarray, truth_key: np.ndarray,
                   truth_l2sq: np.ndarray, enrolled: np.ndarray, thr_l2sq: float) -> dict[str, Any]:
    """recall@1 against exact (all queries, enrolled speakers', never-enrolled speakers'),
    and the share of queries whose decision at the threshold is the same as exact search's
    (the same nearest person when exact finds one within it, else nobody)."""
    ok = hits(keys, l2sq, truth_key, truth_l2sq)
    agree = np.where(truth_l2sq <= thr_l2sq, ok, l2sq > thr_l2sq)
    return {"recall_at_1": r4(float(np.mean(ok))),
            "recall_at_1_enrolled": r4(float(np.mean(ok[enrolled]))),
            "recall_at_1_never_enrolled": r4(float(np.mean(ok[~enrolled]))),
            "decision_agreement": r4(float(np.mean(agree)))}


def latency_summary(lat: np.ndarray) -> dict[str, float | None]:
    return {"p50_ms": r4(1e3 * pctl(lat, 50)), "p99_ms": r4(1e3 * pctl(lat, 99)),
            "mean_ms": r4(1e3 * float(np.mean(lat)))}


# -- HNSW configurations ------------------------------------------------------------------


@dataclass(frozen=True)
class HnswConfig:
    connectivity: int
    expansion_add: int
    dtype: str = "f32"

    @property
    def name(self) -> str:
        return f"M{self.connectivity}/add{self.expansion_add}/{self.dtype}"

    @classmethod
    def parse(cls, text: str) -> HnswConfig:
        parts = text.split(":")
        return cls(int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else "f32")


def registry_params() -> tuple[int, int, int]:
    """(connectivity, expansion_add, expansion_search) of the registry's index."""
    probe = Registry(Path(tempfile.gettempdir()), "probe", 4).replica._new_index()
    return int(probe.connectivity), int(probe.expansion_add), int(probe.expansion_search)


def build_index(cfg: HnswConfig, dim: int, gallery: np.ndarray) -> tuple[Index, dict[str, Any]]:
    gc.collect()
    rss0 = rss_bytes()
    index = Index(ndim=dim, metric="l2sq", dtype=cfg.dtype, connectivity=cfg.connectivity,
                  expansion_add=cfg.expansion_add)
    t = time.perf_counter()
    index.add(np.arange(len(gallery), dtype=np.uint64), gallery)
    build_s = time.perf_counter() - t
    gc.collect()
    return index, {"build_s": r4(build_s), "memory_bytes": int(index.memory_usage),
                   "file_bytes": len(cast(bytes, index.save())),
                   "rss_delta_bytes": rss_bytes() - rss0}


# -- start-up of a real Registry -----------------------------------------------------------


def bulk_write_people(db_path: Path, vectors: np.ndarray, model_id: str,
                      first_key: int | None = None) -> int:
    """Write one person per row of ``vectors`` into an existing registry database in one
    transaction: the rows ``add_person`` writes (``people`` and ``voiceprints``, 8 s of
    speech each, keys ``first_key`` on, by default after the largest) and one generation
    bump. Returns the first key written."""
    n = len(vectors)
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        if first_key is None:
            first_key = int(db.execute("SELECT COALESCE(MAX(key), 0) FROM people")
                            .fetchone()[0]) + 1
        now = time.time()
        for start in range(0, n, 50_000):
            keys = range(first_key + start, first_key + min(n, start + 50_000))
            db.executemany("INSERT INTO people (key, id, name, info, created) "
                           "VALUES (?, ?, ?, '{}', ?)",
                           ((key, f"p_{key:012x}", f"person {key}", now) for key in keys))
            db.executemany("INSERT INTO voiceprints (person_key, model_id, embedding, "
                           "speech_s, created) VALUES (?, ?, ?, 8.0, ?)",
                           ((key, model_id, vectors[key - first_key].astype("<f4").tobytes(),
                             now) for key in keys))
            if n > 200_000:
                sys.stderr.write(f"\r  registry: {min(n, start + 50_000)}/{n} people written  ")
                sys.stderr.flush()
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        db.execute("COMMIT")
    finally:
        db.close()
    if n > 200_000:
        sys.stderr.write("\n")
    return first_key


def startup(gallery: np.ndarray, model_id: str, api_people: int, workdir: Path, k: int,
            probe: np.ndarray) -> dict[str, Any]:
    """Fill a real Registry with ``len(gallery)`` people and time its two start-up paths."""
    folder = Path(tempfile.mkdtemp(prefix="gallery-reg-", dir=workdir))
    n, dim = gallery.shape
    try:
        reg = Registry(folder, model_id, dim)
        reg.open()
        n_api = min(n, api_people)
        t = time.perf_counter()
        for i in range(n_api):
            reg.add_person(f"person {i}", None, gallery[i], 8.0)
        api_s = time.perf_counter() - t
        reg.close()
        t = time.perf_counter()
        if n > n_api:  # the same rows add_person writes, in one transaction
            bulk_write_people(reg.db_path, gallery[n_api:], model_id)
        bulk_s = time.perf_counter() - t
        db_bytes = sum(p.stat().st_size for p in folder.glob("registry.sqlite3*"))
        reg.index_path.unlink(missing_ok=True)
        reg.meta_path.unlink(missing_ok=True)

        gc.collect()
        rss0 = rss_bytes()
        reg = Registry(folder, model_id, dim)
        t = time.perf_counter()
        reg.open()  # no cache: rebuild from SQLite and save the cache
        rebuild_s = time.perf_counter() - t
        rss_open = rss_bytes() - rss0
        assert len(reg) == n, (len(reg), n)
        reg.close()
        del reg
        gc.collect()

        reg = Registry(folder, model_id, dim)
        t = time.perf_counter()
        reg.open()  # the cache matches the database: load it
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        first_hit = reg.search(probe, k)
        first_search_s = time.perf_counter() - t
        assert first_hit, "the registry found nobody"
        assert len(reg) == n
        reg.close()
        del reg
        gc.collect()

        t = time.perf_counter()
        loaded = Index.restore(str(folder / next(folder.glob("index-*.usearch")).name))
        restore_s = time.perf_counter() - t
        del loaded
        t = time.perf_counter()
        viewed = Index.restore(str(next(folder.glob("index-*.usearch"))), view=True)
        assert viewed is not None
        viewed.search(probe, k)
        view_s = time.perf_counter() - t
        del viewed
        index_bytes = next(folder.glob("index-*.usearch")).stat().st_size
        return {"people": n, "api_people": n_api,
                "api_ms_per_person": r4(1e3 * api_s / n_api) if n_api else None,
                "bulk_write_s": r4(bulk_s), "db_bytes": db_bytes, "index_file_bytes": index_bytes,
                "open_rebuild_s": r4(rebuild_s), "open_load_s": r4(load_s),
                "rss_delta_open_bytes": rss_open,
                "first_search_ms": r4(1e3 * first_search_s),
                "index_restore_s": r4(restore_s), "index_view_and_search_s": r4(view_s)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- one gallery size ---------------------------------------------------------------------


def run_size(n: int, e: Embeddings, sp: Split, pert: Perturber, src: np.ndarray,
             src_speaker: np.ndarray, queries: dict[str, np.ndarray], configs: list[HnswConfig],
             ef_search: list[int], reg_params: tuple[int, int, int], cfg: Config,
             model_id: str, args: argparse.Namespace) -> dict[str, Any]:
    t_size = time.perf_counter()
    dim = e.vectors.shape[1]
    k = cfg.match.top_k
    log(f"N = {n}: generating the gallery ...")
    gallery = np.empty((n, dim), dtype=np.float32)
    pos = 0
    for chunk in gallery_chunks(src, n, pert):
        gallery[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    n_real = min(n, len(src))
    owner = src_speaker[np.arange(n) % len(src)]  # speaker of each vector's source

    q_all = queries["all"]
    enrolled = queries["all_enrolled"]
    thr_l2 = distance_to_l2sq(cfg.match.max_distance)
    log(f"N = {n}: exact ground truth for {len(q_all)} recall queries and "
        f"{len(queries['impostor'])} + {len(queries['genuine'])} open-set queries ...")
    t = time.perf_counter()
    truth_key, truth_l2, truth_l2_second = exact_nearest(q_all, gallery)
    _, imp_l2, _ = exact_nearest(queries["impostor"], gallery)
    gen_key, gen_l2, _ = exact_nearest(queries["genuine"], gallery)
    # how clear is the nearest neighbour? (2nd nearest minus nearest, in distance)
    gap = distances(truth_l2_second) - distances(truth_l2)
    contrast = {"gap_p50": r4(pctl(gap, 50)),
                "share_gap_below_0.01": r4(float(np.mean(gap < 0.01))),
                "share_gap_below_0.01_enrolled": r4(float(np.mean(gap[enrolled] < 0.01))),
                "share_gap_below_0.01_never_enrolled": r4(float(np.mean(gap[~enrolled] < 0.01)))}
    truth_s = time.perf_counter() - t

    # exact single-query latency: the registry's path (Index.search exact=True) up to
    # EXACT_SEARCH_MAX_VECTORS, beyond it the same SIMD brute force on the matrix itself
    n_exact = int(min(len(q_all), max(20, 5e7 // n)))
    searcher: Any = _BruteForce(gallery)
    if n <= registry_module.EXACT_SEARCH_MAX_VECTORS:
        searcher = Index(ndim=dim, metric="l2sq", dtype="f32")
        searcher.add(np.arange(n, dtype=np.uint64), gallery)
    log(f"N = {n}: exact search latency over {n_exact} queries ...")
    lat, keys, l2 = time_searches(searcher, q_all[:n_exact], k, exact=True, warmup=3)
    exact = {"queries": n_exact, **latency_summary(lat),
             **recall_summary(keys, l2, truth_key[:n_exact], truth_l2[:n_exact],
                              enrolled[:n_exact], thr_l2),
             "same_voice_at_1": r4(float(np.mean(owner[keys] == owner[truth_key[:n_exact]])))}
    del searcher

    hnsw = []
    reg_far = None
    for hc in configs:
        log(f"N = {n}: building HNSW {hc.name} ...")
        index, info = build_index(hc, dim, gallery)
        log(f"  built in {info['build_s']} s, {info['memory_bytes'] / 1e6:.0f} MB")
        runs = []
        searcher = index if hc.dtype == "f32" else _Rescored(index, gallery)
        for ef in ef_search:
            index.expansion_search = ef  # type: ignore[misc]  # a setter in usearch 2.23
            lat, keys, l2 = time_searches(searcher, q_all, k)
            _, _, l2i = time_searches(searcher, queries["impostor"], k, warmup=0)
            runs.append({"expansion_search": ef, "queries": len(q_all), **latency_summary(lat),
                         **recall_summary(keys, l2, truth_key, truth_l2, enrolled, thr_l2),
                         "same_voice_at_1": r4(float(np.mean(owner[keys] == owner[truth_key]))),
                         "far": r4(float(np.mean(l2i <= thr_l2)))})
            log(f"  expansion_search {ef}: p50 {runs[-1]['p50_ms']} ms, p99 "
                f"{runs[-1]['p99_ms']} ms, recall@1 {runs[-1]['recall_at_1']} (enrolled "
                f"{runs[-1]['recall_at_1_enrolled']}, never-enrolled "
                f"{runs[-1]['recall_at_1_never_enrolled']}), decisions agree "
                f"{runs[-1]['decision_agreement']}")
        is_registry = hc == HnswConfig(reg_params[0], reg_params[1], REGISTRY_DTYPE)
        if is_registry:  # open-set false accepts as the registry's HNSW sees them
            reg_far = next(r["far"] for r in runs if r["expansion_search"] == reg_params[2])
        hnsw.append({"name": hc.name, "connectivity": hc.connectivity,
                     "expansion_add": hc.expansion_add, "dtype": hc.dtype,
                     "registry": is_registry, **info, "searches": runs})
        del index, searcher
        gc.collect()

    imp_d = distances(imp_l2)
    gen_d = distances(gen_l2)
    g_spk = e.speaker[sp.genuine]
    open_set = {
        "threshold": cfg.match.max_distance,
        "impostor_queries": len(imp_l2),
        "far_exact": r4(float(np.mean(imp_l2 <= thr_l2))),
        "far_exact_by_threshold": {str(t): r4(float(np.mean(imp_l2 <= distance_to_l2sq(t))))
                                   for t in FAR_THRESHOLDS},
        "far_registry_index": r4(reg_far) if n > registry_module.EXACT_SEARCH_MAX_VECTORS
        else r4(float(np.mean(imp_l2 <= thr_l2))),
        "nearest_impostor_distance": {"p1": r4(pctl(imp_d, 1)), "p5": r4(pctl(imp_d, 5)),
                                      "p50": r4(pctl(imp_d, 50))},
        "genuine_queries": len(gen_l2),
        "genuine_accepted": r4(float(np.mean(gen_l2 <= thr_l2))),
        "genuine_nearest_own_voice": r4(float(np.mean(owner[gen_key] == g_spk))),
        "genuine_nearest_distance_p50": r4(pctl(gen_d, 50)),
    }
    log(f"N = {n}: open set at {cfg.match.max_distance}: FAR {open_set['far_exact']}, "
        f"nearest impostor p1 {pctl(imp_d, 1):.4f}")

    start = None
    if not args.no_startup:
        log(f"N = {n}: registry start-up (SQLite fill, open with rebuild, open with load) ...")
        start = startup(gallery, model_id, args.api_people, args.workdir, k, q_all[0])
        log(f"  rebuild {start['open_rebuild_s']} s, load {start['open_load_s']} s")
    return {"n": n, "gallery_real": n_real, "gallery_copies": n - n_real,
            "ground_truth_s": r4(truth_s), "nearest_neighbour_contrast": contrast,
            "exact": exact, "hnsw": hnsw,
            "open_set": open_set, "startup": start,
            "elapsed_s": r4(time.perf_counter() - t_size)}


# -- choice, output -----------------------------------------------------------------------


def choose(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The index parameters for the registry, from the largest N.

    Only float32 configurations count (what the registry stores). First rule
    (``all queries``): recall@1 >= TARGET_RECALL over all queries with p99 <= TARGET_MS.
    If none passes, second rule (``enrolled speakers``): recall@1 >= TARGET_RECALL on
    the queries of enrolled speakers and the same accept/reject decision as exact search
    on >= TARGET_RECALL of all queries, with p99 <= TARGET_MS. Among those passing, the
    cheapest to build (lowest connectivity, then expansion_add), then the smallest
    expansion_search. If none passes either (the target is missed), the highest recall@1
    over all queries with p99 <= TARGET_MS (rule ``best within the latency budget``).
    """
    big = results[-1]
    rules: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
        ("all queries", lambda s: s["recall_at_1"] >= TARGET_RECALL),
        ("enrolled speakers", lambda s: s["recall_at_1_enrolled"] >= TARGET_RECALL
         and s["decision_agreement"] >= TARGET_RECALL)]
    for rule, good in rules:
        ok = [(h["connectivity"], h["expansion_add"], s["expansion_search"], h, s)
              for h in big["hnsw"] if h["dtype"] == "f32" for s in h["searches"]
              if good(s) and s["p99_ms"] <= TARGET_MS]
        if ok:
            m, add, ef, h, s = min(ok, key=lambda t: t[:3])
            return {"n": big["n"], "rule": rule, "connectivity": m, "expansion_add": add,
                    "expansion_search": ef, "build_s": h["build_s"],
                    **{key: s[key] for key in ("p50_ms", "p99_ms", "recall_at_1",
                                               "recall_at_1_enrolled",
                                               "recall_at_1_never_enrolled",
                                               "decision_agreement")}}
    within = [(h, s) for h in big["hnsw"] if h["dtype"] == "f32" for s in h["searches"]
              if s["p99_ms"] <= TARGET_MS]
    if not within:
        return None
    h, s = max(within, key=lambda hs: (hs[1]["recall_at_1"], -hs[0]["connectivity"],
                                       -hs[0]["expansion_add"], -hs[1]["expansion_search"]))
    return {"n": big["n"], "rule": "best within the latency budget",
            "connectivity": h["connectivity"], "expansion_add": h["expansion_add"],
            "expansion_search": s["expansion_search"], "build_s": h["build_s"],
            **{key: s[key] for key in ("p50_ms", "p99_ms", "recall_at_1", "recall_at_1_enrolled",
                                       "recall_at_1_never_enrolled", "decision_agreement")}}


def mb(b: int | None) -> str:
    return "-" if b is None else f"{b / 1e6:.0f}"


def print_tables(out: dict[str, Any]) -> None:
    d = out["data"]
    print(f"gallery benchmark, model {out['model_id']}, usearch {out['usearch']}, "
          f"k = {out['top_k']}, threshold {out['threshold']}")
    print(f"real vectors: {d['real_vectors']} ({d['gallery_sources']} gallery sources, "
          f"{d['genuine_queries']} genuine and {d['impostor_queries']} impostor queries, "
          f"{d['impostor_speakers']} never-enrolled speakers)")
    w, c = d["within_speaker_distance"], d["copy_distance"]
    print(f"same speaker, different utterance: distance p10/p50/p90 {w['p10']}/{w['p50']}/"
          f"{w['p90']}; different speakers p50 {d['between_speaker_distance_p50']}")
    print(f"copies ({d['noise']} noise, sigma {d['sigma']}): distance from source "
          f"p10/p50/p90 {c['p10']}/{c['p50']}/{c['p90']}")
    print()
    print(f"{'N':>8} {'index':<20} {'ef_s':>5} {'build s':>8} {'MB':>5} {'file':>5} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'rec@1':>6} {'enrol.':>6} {'never':>6} {'voice':>6} "
          f"{'agree':>6}")
    for r in out["sizes"]:
        rows = [("exact (usearch)", "-", "-", "-", "-", r["exact"])]
        rows += [(h["name"] + (" *" if h["registry"] else ""), s["expansion_search"],
                  f"{h['build_s']:.2f}", mb(h["memory_bytes"]), mb(h["file_bytes"]), s)
                 for h in r["hnsw"] for s in h["searches"]]
        for name, ef, build, mem, file, s in rows:
            print(f"{r['n']:>8} {name:<20} {ef:>5} {build:>8} {mem:>5} {file:>5} "
                  f"{s['p50_ms']:>7.3f} {s['p99_ms']:>7.3f} {s['recall_at_1']:>6.3f} "
                  f"{s['recall_at_1_enrolled']:>6.3f} {s['recall_at_1_never_enrolled']:>6.3f} "
                  f"{s['same_voice_at_1']:>6.3f} {s['decision_agreement']:>6.3f}")
    print("(* = the registry's connectivity/expansion_add; MB = index.memory_usage, file = "
          "saved size; rec@1 = recall@1 vs exact over all queries, enrol./never = queries "
          "of enrolled / never-enrolled speakers; voice = top-1 from the same real voice "
          "(source or copy) as exact's; agree = same decision as exact at the threshold)")
    for r in out["sizes"]:
        c = r["nearest_neighbour_contrast"]
        print(f"N = {r['n']}: 2nd nearest minus nearest (distance) p50 {c['gap_p50']}; "
              f"under 0.01 for {100 * c['share_gap_below_0.01']:.1f}% of queries (enrolled "
              f"{100 * c['share_gap_below_0.01_enrolled']:.1f}%, never-enrolled "
              f"{100 * c['share_gap_below_0.01_never_enrolled']:.1f}%)")
    print()
    print(f"open set: never-enrolled queries whose nearest voiceprint is within the threshold "
          f"(match.max_distance = {out['threshold']}):")
    ths = list(out["sizes"][0]["open_set"]["far_exact_by_threshold"])
    print(f"{'N':>8} " + " ".join(f"{'FAR@' + t:>8}" for t in ths)
          + f" {'FAR reg.':>8} {'nearest imp. p1/p5/p50':>23} {'genuine acc.':>12} "
          f"{'own voice':>9}")
    for r in out["sizes"]:
        o = r["open_set"]
        ni = o["nearest_impostor_distance"]
        fars = " ".join(f"{100 * o['far_exact_by_threshold'][t]:>7.1f}%" for t in ths)
        print(f"{r['n']:>8} {fars} {100 * (o['far_registry_index'] or 0):>7.1f}% "
              f"{ni['p1']:>9.3f}/{ni['p5']:.3f}/{ni['p50']:.3f} "
              f"{100 * o['genuine_accepted']:>11.1f}% "
              f"{100 * o['genuine_nearest_own_voice']:>8.1f}%")
    print("(FAR reg. = at the threshold through the registry's own search; genuine acc. = "
          "held-out queries of enrolled speakers within the threshold; own voice = their "
          "nearest voiceprint is their speaker's or a copy of it)")
    if any(r["startup"] for r in out["sizes"]):
        print()
        print("registry start-up (Registry.open):")
        print(f"{'N':>8} {'rebuild s':>9} {'load s':>7} {'restore s':>9} {'view s':>7} "
              f"{'index MB':>8} {'db MB':>6} {'enrol ms':>8}")
        for r in out["sizes"]:
            s = r["startup"]
            if s:
                print(f"{r['n']:>8} {s['open_rebuild_s']:>9.2f} {s['open_load_s']:>7.2f} "
                      f"{s['index_restore_s']:>9.3f} {s['index_view_and_search_s']:>7.3f} "
                      f"{mb(s['index_file_bytes']):>8} {mb(s['db_bytes']):>6} "
                      f"{(s['api_ms_per_person'] or 0):>8.1f}")
    print()
    ch = out["choice"]
    if ch and ch["rule"] == "best within the latency budget":
        print(f"target missed: no float32 configuration reached recall@1 >= {TARGET_RECALL} "
              f"with p99 <= {TARGET_MS} ms at N = {ch['n']}")
    if ch:
        print(f"choice at N = {ch['n']} (rule: {ch['rule']}): connectivity "
              f"{ch['connectivity']}, expansion_add {ch['expansion_add']}, expansion_search "
              f"{ch['expansion_search']} (p99 {ch['p99_ms']} ms, recall@1 {ch['recall_at_1']}, "
              f"enrolled {ch['recall_at_1_enrolled']}, never-enrolled "
              f"{ch['recall_at_1_never_enrolled']}, decisions agree {ch['decision_agreement']})")
    else:
        print(f"no float32 configuration reached recall@1 >= {TARGET_RECALL} with p99 <= "
              f"{TARGET_MS} ms at N = {out['sizes'][-1]['n']}, not even on enrolled "
              f"speakers' queries")
    rp = out["registry_params"]
    print(f"registry index: connectivity {rp['connectivity']}, expansion_add "
          f"{rp['expansion_add']}, expansion_search {rp['expansion_search']}")


def plot(out: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        log("matplotlib is not installed: no plot (pip install -e '.[tools]')")
        return False
    sizes = [r["n"] for r in out["sizes"]]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
    ax1.plot(sizes, [r["exact"]["p99_ms"] for r in out["sizes"]], "k--o", label="exact")
    for i, h in enumerate(out["sizes"][0]["hnsw"]):
        for j, s in enumerate(h["searches"]):
            runs = [r["hnsw"][i]["searches"][j] for r in out["sizes"]]
            label = f"{h['name']} ef {s['expansion_search']}"
            line, = ax1.plot(sizes, [x["p99_ms"] for x in runs], "-o", ms=3, label=label)
            ax2.plot(sizes, [x["recall_at_1"] for x in runs], "-o", ms=3,
                     color=line.get_color(), label=label)
            ax3.plot(sizes, [x["recall_at_1_enrolled"] for x in runs], "-o", ms=3,
                     color=line.get_color(), label=label)
    for ax in (ax1, ax2, ax3):
        ax.set_xscale("log")
        ax.set_xlabel("enrolled voiceprints N")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.axhline(TARGET_MS, color="red", lw=0.8)
    ax1.set_ylabel("ms")
    ax1.set_title(f"single-query search p99 (k = {out['top_k']})")
    ax1.legend(fontsize=6, ncol=2, loc="upper left")
    for ax, title in ((ax2, "recall@1 vs exact, all queries"),
                      (ax3, "recall@1 vs exact, enrolled speakers' queries")):
        ax.axhline(TARGET_RECALL, color="red", lw=0.8)
        ax.set_title(title)
        ax.set_ylim(top=1.005)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def startup_only(args: argparse.Namespace, sizes: list[int], src: np.ndarray, pert: Perturber,
                 model_id: str, cfg: Config, reg_params: tuple[int, int, int],
                 probe: np.ndarray) -> int:
    """``--startup-only``: the registry start-up part alone, for the registry's parameters."""
    rows = []
    for n in sizes:
        gallery = np.concatenate(list(gallery_chunks(src, n, pert)))
        log(f"N = {n}: registry start-up (SQLite fill, open with rebuild, open with load) ...")
        rows.append(startup(gallery, model_id, args.api_people, args.workdir, cfg.match.top_k,
                            probe))
        log(f"  rebuild {rows[-1]['open_rebuild_s']} s, load {rows[-1]['open_load_s']} s")
        del gallery
    out = {"model_id": model_id, "usearch": usearch.__version__,
           "registry_params": dict(zip(("connectivity", "expansion_add", "expansion_search"),
                                       reg_params)), "startup": rows}
    (args.out / "gallery-startup.json").write_text(json.dumps(out, indent=1))
    print(f"registry start-up, index connectivity {reg_params[0]}, expansion_add "
          f"{reg_params[1]}, expansion_search {reg_params[2]}:")
    for s in rows:
        print(f"{s['people']:>8} people: open with rebuild {s['open_rebuild_s']} s, with load "
              f"{s['open_load_s']} s, first search {s['first_search_ms']} ms, index file "
              f"{mb(s['index_file_bytes'])} MB, database {mb(s['db_bytes'])} MB")
    print(f"wrote {args.out / 'gallery-startup.json'}")
    return 0


# -- distinct people: a two-covariance model of real voiceprints (--people N) ---------------

#: A real enrolled speaker's vector is the centroid of their first ENROL_FILES files'
#: whole-file embeddings; a synthetic person's, of ENROL_FILES synthetic utterances.
ENROL_FILES = 2
#: Synthetic genuine queries: QUERIES_PER_PERSON utterances of each of the first
#: synthetic people (all of them inside the smallest open-set gallery).
QUERIES_PER_PERSON = 2
SYNTH_IMPOSTORS = 3000
#: Open-set figures are computed for every one of these sizes up to N (nested galleries:
#: the real people first, then synthetic people in a fixed order).
OPEN_SET_SIZES = (1000, 10_000, 100_000, 1_000_000)
#: Default HNSW runs of the distinct mode: connectivity:expansion_add:dtype:build threads.
DISTINCT_CONFIGS = "32:256:i8:2,32:256:f32:2,16:128:f32:2,16:128:f32:1,16:128:bf16:2"
DISTINCT_EF = "32,64,128,256"
#: bf16 / i8 indexes return this many candidates, re-scored in float32 (as the registry).
RESCORE_K = replica_module.RESCORE_CANDIDATES
#: The registry index's vector type.
REGISTRY_DTYPE = replica_module.INDEX_DTYPE
#: Reserved keys for deletion placeholders (never a person's key) and the placeholder.
PLACEHOLDER_KEY = 2 ** 63
ROSTER_SIZE = 20
#: The threshold grid of the open-set curves.
T_GRID = tuple(round(0.70 + 0.01 * i, 2) for i in range(36))

# The large-gallery rule (see rule_accept): the threshold tightens with the gallery size,
# t(N) = RULE_T0 - RULE_SLOPE * log10(N / RULE_N0) for N > RULE_N0 (RULE_T0 below), and
# the first candidate must beat the second by RULE_MARGIN.
# Measured (exact search, 1 k .. 1 M distinct people): the threshold that holds FPIR
# near 0.5 % falls with the gallery size (about 0.98 at 1 k, 0.90 at 100 k, 0.86 at 1 M
# without a margin); requiring the first candidate to beat the second by 0.06 halves the
# impostors accepted (their nearest two are close together at large N) while a genuine
# speaker's own voiceprint almost always stands out (FNIR +0.2 point at most), so the
# threshold can stay looser. 0.035 per tenfold from 1.0 at 100 people, margin 0.06, keeps
# FPIR at or under ~0.5 % from 1 k to 1 M (headroom for the model's lighter-than-real
# impostor tail, see plda.validate).
# The server's rule (streamer.identify.GalleryRule, match.large_gallery_* in
# config.yaml): these constants are read from its defaults, so the bench measures what
# the server does.
_MATCH = MatchConfig()
RULE = _MATCH.gallery_rule
RULE_T0 = _MATCH.max_distance
RULE_N0 = RULE.from_people
RULE_SLOPE = RULE.tighten_per_tenfold
RULE_MARGIN = RULE.margin


def rule_threshold(n: int) -> float:
    """The distance threshold of the large-gallery rule with ``n`` people enrolled."""
    return RULE.threshold(RULE_T0, n)


def rule_accept(n: int, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Whether the rule names the nearest candidate (distance ``d1``, second ``d2``)."""
    ok: np.ndarray = (d1 <= rule_threshold(n)) & ((d2 - d1) >= RULE.margin_at(n))
    return ok


@dataclass
class Distinct:
    model: Any  # plda.TwoCovariance
    real_centroids: np.ndarray  # (R, dim) enrolled real speakers
    real_speakers: list[str]
    queries: dict[str, np.ndarray]  # gen_real, gen_syn, imp_real, imp_syn
    owners: dict[str, np.ndarray]  # gen_real, gen_syn: gallery row of the speaker
    info: dict[str, Any]


def synthetic_chunk(model: Any, start: int, stop: int,
                    seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic people ``start .. stop-1`` (means, noise sd, enrolled vectors), the same
    whatever the gallery size (one RNG stream per block of 100 000)."""
    block = 100_000
    means, sds, vecs = [], [], []
    for b in range(start // block, (stop - 1) // block + 1):
        rng = np.random.default_rng([seed, 7, b])
        m, sd = model.people(block, rng)
        v = model.enrolled(m, sd, ENROL_FILES, rng)
        lo, hi = max(start, b * block) - b * block, min(stop, (b + 1) * block) - b * block
        means.append(m[lo:hi])
        sds.append(sd[lo:hi])
        vecs.append(v[lo:hi])
    return np.concatenate(means), np.concatenate(sds), np.concatenate(vecs)


def distinct_gallery(d: Distinct, n: int) -> np.ndarray:
    r = len(d.real_centroids)
    out = np.empty((n, d.model.dim), dtype=np.float32)
    out[:min(n, r)] = d.real_centroids[:n]
    for start in range(r, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = synthetic_chunk(d.model, start - r, stop - r)[2]
        if n > 200_000:
            sys.stderr.write(f"\r  gallery: {stop}/{n} people  ")
            sys.stderr.flush()
    if n > 200_000:
        sys.stderr.write("\n")
    return out


def prepare_distinct(e: Embeddings, small: bool, rng: np.random.Generator) -> Distinct:
    """Fit the model, validate it, and make the real and synthetic queries."""
    import plda

    whole = e.kind == "whole"
    if small or not whole.any():  # --small embeds 2 s crops (rarely a whole file)
        whole = np.ones(len(e.kind), dtype=bool)
    within = within_speaker_distances(e, np.flatnonzero(whole))
    labels, merged = plda.merge_duplicates(e.vectors[whole], e.speaker[whole],
                                           float(np.median(within)))
    speaker = e.speaker.copy()
    for a, b, _ in merged:
        speaker[speaker == b] = a
    model = plda.fit(e.vectors[whole], labels)
    val = plda.validate(model, e.vectors[whole], labels, rng, replicas=4 if small else 20)
    samples = val.pop("_samples")
    e2 = Embeddings(e.vectors, e.dataset, speaker, e.file, e.kind)
    sp = split(e2)
    imp_spk = set(speaker[sp.impostor].tolist())
    cents, names, gen_rows, gen_owner, imp_rows = [], [], [], [], list(sp.impostor)
    for spk in dict.fromkeys(speaker.tolist()):
        if spk in imp_spk:
            continue
        rows = np.flatnonzero(speaker == spk)
        files = list(dict.fromkeys(e.file[rows].tolist()))
        enrol = files[:ENROL_FILES]
        if len(files) <= ENROL_FILES:
            imp_rows += rows.tolist()  # too few files to hold any out: never enrolled
            continue
        er = [r for r in rows if e.file[r] in enrol and e.kind[r] == "whole"]
        er = er or [r for r in rows if e.file[r] in enrol]
        cents.append(plda.unit(e.vectors[er].astype(np.float64).mean(axis=0)[None])[0])
        names.append(spk)
        held = [r for r in rows if e.file[r] not in enrol]
        gen_rows += held
        gen_owner += [len(cents) - 1] * len(held)
    real = np.stack(cents).astype(np.float32)
    n_syn_people = max(1, min(1000 if not small else 200, OPEN_SET_SIZES[0]) - len(real))
    qrng = np.random.default_rng([SEED, 11])
    means, sds, _ = synthetic_chunk(model, 0, n_syn_people)
    rows = np.repeat(np.arange(n_syn_people), QUERIES_PER_PERSON)
    gen_syn = model.utterances(means[rows], sds[rows], qrng)
    im, isd = model.people(SYNTH_IMPOSTORS if not small else 500, qrng)
    imp_syn = model.utterances(im, isd, qrng)
    queries = {"gen_real": e.vectors[np.array(gen_rows)], "gen_syn": gen_syn,
               "imp_real": e.vectors[np.array(imp_rows)], "imp_syn": imp_syn}
    owners = {"gen_real": np.array(gen_owner), "gen_syn": rows + len(real)}
    info = {"model": model.info, "merged_duplicate_speakers": merged,
            "validation": val, "enrol_files": ENROL_FILES,
            "real_enrolled_speakers": len(real),
            "real_never_enrolled_speakers": len(set(speaker[np.array(imp_rows)].tolist())),
            "queries": {k: len(v) for k, v in queries.items()},
            "_samples": samples}
    return Distinct(model, real, names, queries, owners, info)


def exact_top2(gallery: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact nearest and second nearest (numpy brute force in chunks, float32):
    (row of the nearest, its distance, the second's distance)."""
    if len(gallery) < 2:
        k1, l1, _ = exact_nearest(q, gallery)
        return k1, np.sqrt(np.maximum(l1.astype(np.float64), 0.0)), np.full(len(q), np.inf)
    k1, l1, l2 = exact_nearest(np.ascontiguousarray(q, dtype=np.float32), gallery)
    return (k1, np.sqrt(np.maximum(l1.astype(np.float64), 0.0)),
            np.sqrt(np.maximum(l2.astype(np.float64), 0.0)))


def open_set(n: int, gallery: np.ndarray, d: Distinct,
             rng: np.random.Generator) -> dict[str, Any]:
    """FPIR / FNIR at gallery size n (exact search), at fixed thresholds and the rule, and
    for a room roster of ROSTER_SIZE people against everyone."""
    thr = 1.0
    res: dict[str, Any] = {"n": n, "rule_threshold": rule_threshold(n),
                           "rule_margin": RULE_MARGIN}
    curves: dict[str, list[float]] = {}
    top: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for kind in ("gen_real", "gen_syn", "imp_real", "imp_syn"):
        q = d.queries[kind]
        if kind == "gen_syn":  # only people inside this gallery
            keep = d.owners[kind] < n
            q = q[keep]
        top[kind] = exact_top2(gallery, q)
    for kind, (k1, d1, d2) in top.items():
        if kind.startswith("gen"):
            own = d.owners[kind][d.owners[kind] < n] if kind == "gen_syn" else d.owners[kind]
            right = k1 == own
            curves[kind] = [r4(float(np.mean(~(right & (d1 <= t))))) for t in T_GRID]
            res[f"fnir_{kind[4:]}_at_1.0"] = r4(float(np.mean(~(right & (d1 <= thr)))))
            res[f"fnir_{kind[4:]}_at_0.9"] = r4(float(np.mean(~(right & (d1 <= 0.9)))))
            res[f"fnir_{kind[4:]}_rule"] = r4(float(np.mean(~(right & rule_accept(n, d1, d2)))))
            res[f"misidentified_{kind[4:]}_at_1.0"] = r4(float(np.mean(~right & (d1 <= thr))))
        else:
            curves[kind] = [r4(float(np.mean(d1 <= t))) for t in T_GRID]
            res[f"fpir_{kind[4:]}_at_1.0"] = r4(float(np.mean(d1 <= thr)))
            res[f"fpir_{kind[4:]}_at_0.9"] = r4(float(np.mean(d1 <= 0.9)))
            res[f"fpir_{kind[4:]}_rule"] = r4(float(np.mean(rule_accept(n, d1, d2))))
            res[f"nearest_{kind[4:]}_p0.1_p1_p50"] = [r4(pctl(d1, p)) for p in (0.1, 1, 50)]
    res["fpir_rule"] = max(res["fpir_real_rule"], res["fpir_syn_rule"])
    res["fnir_rule"] = max(res["fnir_real_rule"], res["fnir_syn_rule"])
    res["curves"] = {"t": list(T_GRID), **curves}
    # rooms with a roster of ROSTER_SIZE people: members are matched first at 1.0, then
    # everyone under the stricter outside threshold (0.9 today, or the rule)
    room: dict[str, Any] = {"roster_size": ROSTER_SIZE}
    for kind in ("gen_real", "gen_syn", "imp_real", "imp_syn"):
        k1, d1, d2 = top[kind]
        q = d.queries[kind]
        own = None
        if kind.startswith("gen"):
            own = d.owners[kind][d.owners[kind] < n] if kind == "gen_syn" else d.owners[kind]
            q = q[d.owners[kind] < n] if kind == "gen_syn" else q
        for visitor in ((False, True) if own is not None else (False,)):
            members = rng.integers(0, n, (len(q), ROSTER_SIZE))
            if own is not None and not visitor:
                members[:, 0] = own  # the speaker is on the room's roster
            elif own is not None:  # an enrolled visitor: on nobody's roster here
                members = np.where(members == own[:, None], (members + 1) % n, members)
            diff = gallery[members] - q[:, None, :]
            md = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
            r_best = members[np.arange(len(q)), md.argmin(axis=1)]
            r_d = md.min(axis=1)
            by_roster = r_d <= 1.0
            for label, outside in (("0.9", d1 <= 0.9),
                                   ("rule", rule_accept(n, d1, d2))):
                named = by_roster | outside.astype(bool)
                who = np.where(by_roster, r_best, k1)
                key = f"{kind}{'_visitor' if visitor else ''}"
                if own is None:
                    room[f"fpir_{key}_roster_1.0_then_{label}"] = r4(float(np.mean(named)))
                else:
                    room[f"fnir_{key}_roster_1.0_then_{label}"] = r4(
                        float(np.mean(~(named & (who == own)))))
            if own is None:
                room[f"fpir_{kind}_roster_only_1.0"] = r4(float(np.mean(by_roster)))
            elif not visitor:
                room[f"fnir_{kind}_roster_only_1.0"] = r4(
                    float(np.mean(~(by_roster & (r_best == own)))))
            else:
                room[f"{kind}_visitor_named_as_member_1.0"] = r4(float(np.mean(by_roster)))
    res["room"] = room
    return res


def self_check(index: Index, gallery: np.ndarray, k: int) -> np.ndarray:
    """Keys (rows) whose own vector does not find them among the top ``k``."""
    missing = []
    step = 50_000
    for start in range(0, len(gallery), step):
        q = gallery[start:start + step]
        m = index.search(q, k, threads=os.cpu_count() or 1)
        keys = np.asarray(m.keys).reshape(len(q), -1)
        found = (keys == np.arange(start, start + len(q), dtype=np.uint64)[:, None]).any(axis=1)
        missing += (np.flatnonzero(~found) + start).tolist()
    return np.asarray(missing, dtype=np.int64)


def gil_share(index: Index, q: np.ndarray, k: int, seconds: float = 1.0) -> float:
    """How much pure-Python work another thread gets done while searches run in a loop,
    relative to an idle interpreter (1.0: searches release the GIL; ~0: they hold it)."""
    import threading

    def count(stop_at: float) -> int:
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
        return n

    base = count(time.perf_counter() + seconds / 2) * 2
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            for row in q:
                index.search(row, k)

    t = threading.Thread(target=searcher)
    t.start()
    time.sleep(0.05)
    busy = count(time.perf_counter() + seconds)
    stop.set()
    t.join()
    return r4(busy / base) or 0.0


def search_rescored(index: Index, gallery: np.ndarray, q: np.ndarray, k: int,
                    rescore: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched search (all cores): top-1 key, its distance and the second's, re-scored in
    float32 against ``gallery`` when ``rescore`` (bf16 / i8 indexes)."""
    m = index.search(q, RESCORE_K if rescore else max(2, k), threads=os.cpu_count() or 1)
    keys = np.asarray(m.keys).astype(np.int64).reshape(len(q), -1)
    l2 = np.asarray(m.distances, dtype=np.float64).reshape(len(q), -1)
    counts = np.asarray(m.counts).reshape(-1)
    valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
    if rescore:
        safe = np.where(valid, keys, 0)
        diff = gallery[safe] - q[:, None, :]
        l2 = np.einsum("ijk,ijk->ij", diff, diff).astype(np.float64)
    l2 = np.where(valid, l2, np.inf)
    o = np.argsort(l2, axis=1)[:, :2]
    kk, dd = np.take_along_axis(keys, o, 1), np.sqrt(np.maximum(np.take_along_axis(l2, o, 1), 0))
    return kk[:, 0], dd[:, 0], dd[:, 1]


def time_single(index: Index, gallery: np.ndarray, q: np.ndarray, k: int,
                rescore: bool) -> np.ndarray:
    """Latency of one search call per query (the server's path), with the float32
    re-scoring of the top RESCORE_K for bf16 / i8."""
    lat = np.empty(len(q))
    clock = time.perf_counter
    for row in q[:20]:
        index.search(row, k)
    gc.disable()
    try:
        for i, row in enumerate(q):
            t = clock()
            if rescore:
                m = index.search(row, RESCORE_K)
                cand = gallery[np.asarray(m.keys, dtype=np.int64)]
                diff = cand - row
                int(np.argmin(np.einsum("ij,ij->i", diff, diff)))
            else:
                index.search(row, k)
            lat[i] = clock() - t
    finally:
        gc.enable()
    return lat


def index_cache_path(folder: Path | None, gallery: np.ndarray, n: int, conn: int, add: int,
                     dtype: str, threads: int) -> Path | None:
    """Where a built, checked and repaired index of this exact gallery is kept (None: no
    ``--index-cache``). The name carries a digest of the gallery's bytes, so a changed
    model, seed or generator never reuses a stale index."""
    if folder is None:
        return None
    digest = hashlib.sha256(np.ascontiguousarray(gallery, dtype=np.float32).data).hexdigest()
    return folder / f"people-{n}-{conn}-{add}-{dtype}-t{threads}-{digest[:16]}.usearch"


def load_cached_index(path: Path | None) -> tuple[Index, dict[str, Any]] | None:
    """The index at ``path`` and its build facts, or None when there is none."""
    if path is None or not path.exists() or not path.with_suffix(".json").exists():
        return None
    index = Index.restore(str(path))
    if index is None:
        return None
    return index, json.loads(path.with_suffix(".json").read_text())


def save_cached_index(path: Path | None, index: Index, facts: dict[str, Any]) -> None:
    """Keep a built index for later runs (``--index-cache``); a 1 M build takes ~40 min."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    index.save(str(path))
    path.with_suffix(".json").write_text(json.dumps(facts))


def against_exact(n: int, truth: dict[str, Any], hk: np.ndarray, hd1: np.ndarray,
                  hd2: np.ndarray) -> dict[str, float | None]:
    """How a search's answers (top key ``hk``, its distance ``hd1``, the second's ``hd2``,
    per query) compare with exact search's ``truth`` at ``n`` people: recall@1 over the
    genuine queries within 1.0 / named under the rule / all, and decision agreement at
    the fixed threshold 1.0 and under the rule."""
    k1x, d1x, d2x, own = truth["k1"], truth["d1"], truth["d2"], truth["own"]
    same = (hk == k1x) | (np.abs(hd1 - d1x) < 1e-5)
    measured = (own >= 0) & (d1x <= 1.0)  # genuine queries whose exact nearest passes 1.0
    r_ex, r_hn = rule_accept(n, d1x, d2x), rule_accept(n, hd1, hd2)
    measured_rule = (own >= 0) & r_ex  # ... and those the server names at this size
    agree = np.where(d1x <= 1.0, same & (hd1 <= 1.0), hd1 > 1.0)
    return {"genuine_recall_at_1": r4(float(np.mean(same[measured]))),
            "genuine_recall_at_1_rule": r4(float(np.mean(same[measured_rule])))
            if measured_rule.any() else None,
            "recall_at_1_all": r4(float(np.mean(same))),
            "decision_agreement": r4(float(np.mean(agree))),
            "decision_agreement_rule": r4(float(np.mean(np.where(r_ex, same & r_hn, ~r_hn))))}


def hnsw_distinct(n: int, gallery: np.ndarray, d: Distinct, truth: dict[str, Any],
                  specs: list[str], ef_list: list[int], reg_params: tuple[int, int, int],
                  k: int, n_timing: int, rng: np.random.Generator,
                  index_cache: Path | None = None) -> tuple[list[dict[str, Any]], Index | None]:
    """Build each configuration (or load it from ``index_cache``), check every key finds
    itself, and measure searches. Returns the runs and the index built with the
    registry's own settings, if one was."""
    q_all = np.concatenate([d.queries[x] for x in ("gen_real", "gen_syn", "imp_real",
                                                   "imp_syn")])
    timing = q_all[rng.permutation(len(q_all))[:n_timing]]
    out = []
    keep: Index | None = None
    for spec in specs:
        parts = spec.split(":")
        conn, add, dtype = int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else "f32"
        threads = int(parts[3]) if len(parts) > 3 else (os.cpu_count() or 1)
        cached = index_cache_path(index_cache, gallery, n, conn, add, dtype, threads)
        built = load_cached_index(cached)
        if built is not None:
            index, facts = built
            build_s, missing_n, check_s = facts["build_s"], facts["missing"], facts["check_s"]
            repaired_missing = facts["repaired_missing"]
            log(f"N = {n}: HNSW {conn}/{add} {dtype} loaded from {cached} (built in "
                f"{build_s:.1f} s with {threads} thread(s) by an earlier run)")
        else:
            log(f"N = {n}: building HNSW {conn}/{add} {dtype} with {threads} thread(s) ...")
            index = Index(ndim=gallery.shape[1], metric="l2sq", dtype=dtype,
                          connectivity=conn, expansion_add=add,
                          expansion_search=reg_params[2])
            t = time.perf_counter()
            try:
                index.add(np.arange(n, dtype=np.uint64), gallery, threads=threads)
            except RuntimeError as exc:  # e.g. "Operation has been terminated" by a signal
                log(f"  build failed: {exc}")
                out.append({"connectivity": conn, "expansion_add": add, "dtype": dtype,
                            "build_threads": threads, "error": str(exc)})
                continue
            build_s = time.perf_counter() - t
            log(f"  built in {build_s:.1f} s; checking that every key finds itself ...")
            t = time.perf_counter()
            missing = self_check(index, gallery, k)
            check_s = time.perf_counter() - t
            missing_n = int(len(missing))
            repaired_missing = None
            if missing_n:  # repair: remove and re-add them one thread, check them again
                index.remove(missing.astype(np.uint64))
                index.add(missing.astype(np.uint64), gallery[missing], threads=1)
                m = index.search(gallery[missing], k, threads=os.cpu_count() or 1)
                keys = np.asarray(m.keys).reshape(missing_n, -1)
                repaired_missing = int(np.sum(~(keys == missing[:, None].astype(np.uint64))
                                              .any(1)))
            log(f"  {missing_n} keys did not find themselves ({check_s:.0f} s)"
                + (f"; after re-adding them: {repaired_missing}" if missing_n else ""))
            save_cached_index(cached, index, {"build_s": build_s, "missing": missing_n,
                                              "check_s": check_s,
                                              "repaired_missing": repaired_missing})
        rescore = dtype != "f32"
        runs = []
        for ef in ef_list:
            index.expansion_search = ef  # type: ignore[misc]
            lat = time_single(index, gallery, timing, k, rescore)
            hk, hd1, hd2 = search_rescored(index, gallery, q_all, k, rescore)
            runs.append({"expansion_search": ef, **latency_summary(lat),
                         **against_exact(n, truth, hk, hd1, hd2)})
            log(f"  ef {ef}: p50 {runs[-1]['p50_ms']} ms, p99 {runs[-1]['p99_ms']} ms, "
                f"genuine recall@1 {runs[-1]['genuine_recall_at_1']} (named under the rule "
                f"{runs[-1]['genuine_recall_at_1_rule']}), agreement "
                f"{runs[-1]['decision_agreement']} (rule {runs[-1]['decision_agreement_rule']})")
        index.expansion_search = reg_params[2]  # type: ignore[misc]
        entry = {"connectivity": conn, "expansion_add": add, "dtype": dtype,
                 "build_threads": threads, "build_s": r4(build_s),
                 "memory_bytes": int(index.memory_usage),
                 "keys_not_finding_themselves": missing_n,
                 "keys_not_finding_themselves_after_readd": repaired_missing,
                 "self_check_s": r4(check_s), "searches": runs,
                 "from_index_cache": built is not None}
        if not out:  # batching concurrent queries, and the GIL, on the first configuration
            entry["batched"] = batched(index, timing, k)
            entry["gil_share_while_searching"] = gil_share(index, timing[:200], k)
        out.append(entry)
        if keep is None and (conn, add, dtype) == (*reg_params[:2], REGISTRY_DTYPE):
            keep = index  # the registry's own kind of index: handed to it
        else:
            del index
        gc.collect()
    return out, keep


def batched(index: Index, q: np.ndarray, k: int) -> list[dict[str, Any]]:
    """B concurrent queries answered by one search call on all cores vs one by one."""
    res = []
    threads = os.cpu_count() or 1
    for b in (1, 8, 32):
        lat = []
        calls = max(20, min(200, len(q) // b))
        t0 = time.perf_counter()
        for c in range(calls):
            batch = q[(c * b) % max(1, len(q) - b):][:b]
            t = time.perf_counter()
            if b == 1:
                index.search(batch[0], k)
            else:
                index.search(batch, k, threads=threads)
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        res.append({"batch": b, "threads": 1 if b == 1 else threads,
                    "call_p50_ms": r4(1e3 * pctl(lat, 50)), "call_p99_ms": r4(1e3 * pctl(lat, 99)),
                    "queries_per_s": r4(calls * b / wall)})
    return res


def deletion(index: Index, gallery: np.ndarray, victim: int, folder: Path) -> dict[str, Any]:
    """Erase one person from the index alone: remove + add a placeholder (a random
    direction, as the registry) + save the index file atomically. The victim's bytes
    are those the index stores (int8 or float32)."""
    path = folder / "index.usearch"
    vb = np.asarray(index.get(victim)).tobytes()
    index.save(str(path))
    before = vb in path.read_bytes()
    placeholder = np.random.default_rng(victim).standard_normal(gallery.shape[1])
    placeholder = (placeholder / np.linalg.norm(placeholder)).astype(np.float32)
    size0 = path.stat().st_size
    # the removal alone (what the registry cannot do: the bytes stay)
    t = time.perf_counter()
    index.remove(victim)
    remove_s = time.perf_counter() - t
    index.save(str(folder / "removed-only.usearch"))
    after_remove_only = vb in (folder / "removed-only.usearch").read_bytes()
    (folder / "removed-only.usearch").unlink()
    t = time.perf_counter()
    index.add(PLACEHOLDER_KEY, placeholder)
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".index-", suffix=".tmp")
    os.close(fd)
    index.save(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(folder, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    data = path.read_bytes()
    sha_s_read = time.perf_counter() - t
    t = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    sha_s = time.perf_counter() - t
    erased = vb not in data
    m = index.search(gallery[victim], 10)
    found = victim in np.asarray(m.keys).tolist() or index.contains(victim)
    return {"victim_key": victim, "bytes_in_file_before": before,
            "bytes_in_file_after_remove_only": after_remove_only,
            "bytes_in_file_after_placeholder": not erased,
            "victim_found_after": bool(found),
            "file_bytes_before": size0, "file_bytes_after": len(data),
            "remove_s": r4(remove_s), "add_placeholder_s": r4(add_s),
            "save_atomic_fsync_s": r4(save_s), "read_back_s": r4(sha_s_read),
            "sha256_s": r4(sha_s),
            "delete_s": r4(remove_s + add_s + save_s),
            "delete_with_sha256_s": r4(remove_s + add_s + save_s + sha_s)}


def startup_distinct(index: Index, n: int, dim: int, model_id: str,
                     folder: Path) -> dict[str, Any]:
    """Start-up from the saved index alone: Index.restore, and reading, hashing and
    loading the file (the registry's own start-up is measured by registry_at_scale)."""
    path = folder / "start.usearch"
    index.save(str(path))
    gc.collect()
    t = time.perf_counter()
    restored = Index.restore(str(path))
    restore_s = time.perf_counter() - t
    assert restored is not None and len(restored) == len(index)
    del restored
    gc.collect()
    t = time.perf_counter()
    data = path.read_bytes()
    hashlib.sha256(data).hexdigest()
    loaded = Index(ndim=dim, metric="l2sq", dtype=index.dtype)
    loaded.load(data)
    steps_s = time.perf_counter() - t
    del loaded, data
    gc.collect()
    out: dict[str, Any] = {"people": n, "index_file_bytes": path.stat().st_size,
                           "index_restore_s": r4(restore_s),
                           "read_sha256_load_s": r4(steps_s)}
    path.unlink()
    out["startup_s"] = out["read_sha256_load_s"]
    return out


def _bytes_in_folder(folder: Path, needle: bytes, chunk: int = 64 << 20) -> list[str]:
    """Files under ``folder`` that contain ``needle`` (read in overlapping chunks)."""
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        with path.open("rb") as f:
            tail = b""
            while block := f.read(chunk):
                if needle in tail + block:
                    found.append(path.name)
                    break
                tail = block[-len(needle):]
    return found


def registry_search(reg: Registry, n: int, q_all: np.ndarray, truth: dict[str, Any],
                    timing: np.ndarray, k: int) -> dict[str, Any]:
    """The registry's own search at ``n`` people (``Replica.search``, the path identify
    and live decisions take): single-query latency over ``timing``, interleaved with the
    bare index search it starts from (the same-run baseline), and recall@1 and decision
    agreement against exact over ``q_all`` (people ids are ``p_<row>``)."""
    k = max(2, k)  # the rule's margin compares the first two
    reg.replica.wait_idle(600)  # the start-up's background checksum: steady state only
    index = reg.replica._index  # noqa: SLF001 - the baseline: the bare index search
    for q in timing[:20]:
        reg.replica.search(q, k)
        index.search(q, RESCORE_K)
    lat, bare = np.empty(len(timing)), np.empty(len(timing))
    clock = time.perf_counter
    gc.disable()
    # interleaved, so both see the same machine; the second of a pair finds the graph
    # nodes the first walked in the CPU cache, so each goes first every other time
    pair = ((lat, lambda q: reg.replica.search(q, k)), (bare, lambda q: index.search(q, RESCORE_K)))
    try:
        for i, q in enumerate(timing):
            for out, search in pair if i % 2 else pair[::-1]:
                t = clock()
                search(q)
                out[i] = clock() - t
    finally:
        gc.enable()
    hk = np.full(len(q_all), -1, np.int64)
    hd1 = np.full(len(q_all), np.inf)
    hd2 = np.full(len(q_all), np.inf)
    for start in range(0, len(q_all), 256):
        for i, found in enumerate(reg.replica.search_many(q_all[start:start + 256], k),
                                  start):
            if found:
                hk[i], hd1[i] = int(found[0].id[2:], 16), found[0].distance
            if len(found) > 1:
                hd2[i] = found[1].distance
    return {**latency_summary(lat), "p90_ms": r4(1e3 * pctl(lat, 90)),
            "p999_ms": r4(1e3 * pctl(lat, 99.9)),
            "bare_index": {**latency_summary(bare), "p999_ms": r4(1e3 * pctl(bare, 99.9))},
            "queries_timed": len(timing), "queries": len(q_all),
            **against_exact(n, truth, hk, hd1, hd2)}


def registry_at_scale(index: Index | None, gallery: np.ndarray, model_id: str,
                      folder: Path, search: Callable[[Registry], dict[str, Any]] | None = None
                      ) -> dict[str, Any]:
    """The real :class:`SqliteRegistry` holding every person of ``gallery``: start-up from
    its saved index cache, ``search(registry)`` measured on it, a deletion, and the
    deleted person's bytes searched for in every file of the data dir.

    The people rows are bulk-written (the rows ``add_person`` writes, keys 0..N-1). An
    already built ``index`` of the registry's own kind is handed to the registry's cache
    writer with the float32 vectors (private attributes: a benchmark may peek), so no
    rebuild is needed; without one the registry builds its index itself (13 minutes at
    a million people).
    """
    n, dim = gallery.shape
    data = folder / "registry-data"
    reg = Registry(data, model_id, dim)
    reg.open()
    reg.close()
    t = time.perf_counter()
    bulk_write_people(reg.db_path, gallery, model_id, first_key=0)  # keys as in ``index``
    db = sqlite3.connect(reg.db_path)
    db_id = str(db.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()[0])
    generation = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    db.close()
    write_s = time.perf_counter() - t
    out: dict[str, Any] = {"people": n, "bulk_write_s": r4(write_s)}
    t = time.perf_counter()
    if index is not None:
        from streamer.vector_store import VectorStore

        rep = replica_module.Replica(data, model_id, dim)
        store = VectorStore(dim, rep._far, capacity=n)  # noqa: SLF001
        store.put(np.arange(n, dtype=np.uint64), gallery)
        rep._index, rep._store = index, store  # noqa: SLF001 - the built index, keys = rows
        rep.mark(db_id, generation)
        rep.flush()
        rep._index = rep._new_index()  # noqa: SLF001 - not ours to close
        rep.close()
        out["cache_save_s"] = r4(time.perf_counter() - t)
    else:
        reg = Registry(data, model_id, dim)
        reg.open()  # no cache: built from the database
        assert reg.replica.wait_idle(7200)
        reg.close()  # writes the cache
        out["build_s"] = r4(time.perf_counter() - t)
    gc.collect()
    out["index_file_bytes"] = reg.index_path.stat().st_size
    t = time.perf_counter()
    reg = Registry(data, model_id, dim)
    reg.open()  # the cache belongs to the database and is at its generation: loaded
    out["startup_s"] = r4(time.perf_counter() - t)
    try:
        out["people_after_open"] = len(reg)
        if search is not None:
            out["search"] = search(reg)
        victim = n // 2
        needles = {"float32": gallery[victim].astype("<f4").tobytes(),
                   "int8": bytes(reg.replica._index.get(victim).tobytes())}  # noqa: SLF001
        person = f"p_{victim:012x}"
        out["bytes_before"] = {k: _bytes_in_folder(data, v) for k, v in needles.items()}
        assert reg.search(gallery[victim], 1)[0].id == person
        t = time.perf_counter()
        reg.delete_person(person)
        out["delete_s"] = r4(time.perf_counter() - t)
        out["bytes_after_delete"] = {k: _bytes_in_folder(data, v) for k, v in needles.items()}
        out["found_after_delete"] = any(c.id == person for c in reg.search(gallery[victim], 10))
        t = time.perf_counter()
        reg.replica.wait_saved(600)
        out["background_save_s"] = r4(time.perf_counter() - t)
        out["bytes_after_background_save"] = {k: _bytes_in_folder(data, v)
                                              for k, v in needles.items()}
    finally:
        reg.close()
        shutil.rmtree(data, ignore_errors=True)
    return out


def run_people(args: argparse.Namespace, e: Embeddings, model_id: str, cfg: Config,
               reg_params: tuple[int, int, int]) -> int:
    """``--people N``: one gallery of N distinct people (real enrolled + synthetic)."""
    t0 = time.perf_counter()
    n = args.people
    rng = np.random.default_rng(SEED)
    d = prepare_distinct(e, args.small, rng)
    samples = d.info.pop("_samples")
    v = d.info["validation"]["nearest_impostor"]
    log(f"model: {d.info['model']}")
    log(f"validation at N = {d.info['validation']['gallery_size']}: nearest impostor "
        f"p1 real {v['real']['p1']} / synthetic {v['synthetic']['p1']} / real vs synthetic "
        f"{v['real_vs_synthetic']['p1']}; share within 1.0: {v['real']['share_le_1.0']} / "
        f"{v['synthetic']['share_le_1.0']} / {v['real_vs_synthetic']['share_le_1.0']}")
    if n < len(d.real_centroids):
        raise SystemExit(f"--people must be at least {len(d.real_centroids)} (the real "
                         "enrolled speakers)")
    log(f"N = {n}: generating {n - len(d.real_centroids)} synthetic people ...")
    gallery = distinct_gallery(d, n)
    sizes = sorted({s for s in OPEN_SET_SIZES if s < n} | {n})
    open_sets = []
    for s in ([] if args.no_open_set else sizes):
        log(f"open set at {s} people (exact search) ...")
        open_sets.append(open_set(s, gallery[:s], d, rng))
        o = open_sets[-1]
        log(f"  FPIR at 1.0 real {o['fpir_real_at_1.0']} synthetic {o['fpir_syn_at_1.0']}; "
            f"rule t = {o['rule_threshold']}: FPIR {o['fpir_real_rule']} / "
            f"{o['fpir_syn_rule']}, FNIR {o['fnir_real_rule']} / {o['fnir_syn_rule']}")
    # exact truth at N for the index measurements, over every query
    kinds = ("gen_real", "gen_syn", "imp_real", "imp_syn")
    q_all = np.concatenate([d.queries[x] for x in kinds])
    own = np.concatenate([d.owners["gen_real"], d.owners["gen_syn"],
                          -np.ones(len(d.queries["imp_real"]) + len(d.queries["imp_syn"]),
                                   dtype=np.int64)])
    t = time.perf_counter()
    k1, d1, d2 = exact_top2(gallery, q_all)
    truth_s = time.perf_counter() - t
    sub = rng.choice(len(q_all), min(200, len(q_all)), replace=False)
    nk, nl2, _ = exact_nearest(q_all[sub], gallery)
    exact_check = r4(float(np.mean((nk == k1[sub]) | (np.abs(np.sqrt(nl2) - d1[sub]) < 1e-4))))
    k = cfg.match.top_k
    exact_lat = time_searches(_BruteForce(gallery), q_all[rng.permutation(len(q_all))[
        :int(min(len(q_all), max(20, 5e7 // n)))]], k, exact=True, warmup=3)[0]
    truth = {"k1": k1, "d1": d1, "d2": d2, "own": own}
    hnsw: list[dict[str, Any]] = []
    delete = start = registry_run = None
    folder = Path(tempfile.mkdtemp(prefix="gallery-distinct-", dir=args.workdir))
    try:
        if not args.no_index:
            specs = [s for s in args.distinct_configs.split(",") if s.strip()]
            ef_list = [int(x) for x in args.ef_search.split(",") if x.strip()]
            hnsw, keep = hnsw_distinct(n, gallery, d, truth, specs, ef_list, reg_params, k,
                                       args.queries, rng, args.index_cache)
            timing = q_all[rng.permutation(len(q_all))[:args.queries]]
            log(f"N = {n}: the registry with every person: start-up, search, deletion ...")
            registry_run = registry_at_scale(
                keep, gallery, model_id, folder,
                lambda reg: registry_search(reg, n, q_all, truth, timing, k))
            log(f"  {registry_run}")
            if keep is not None:
                log(f"N = {n}: start-up from the saved index (the index alone) ...")
                start = startup_distinct(keep, n, gallery.shape[1], model_id, folder)
                log(f"  {start}")
                log(f"N = {n}: deletion (remove + placeholder + atomic save) ...")
                delete = deletion(keep, gallery, len(d.real_centroids) // 2, folder)
                log(f"  {delete}")
                del keep
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    top = open_sets[-1] if open_sets else {"fpir_rule": None, "fnir_rule": None}
    # the registry: exact up to EXACT_SEARCH_MAX_VECTORS, else its HNSW parameters
    reg = None
    if n > registry_module.EXACT_SEARCH_MAX_VECTORS and hnsw:
        built = [h for h in hnsw if "error" not in h]
        reg = next((h for h in built if (h["connectivity"], h["expansion_add"], h["dtype"])
                    == (*reg_params[:2], REGISTRY_DTYPE)), None)
    main_run = None
    if reg is not None:
        main_run = next((s for s in reg["searches"] if s["expansion_search"] == reg_params[2]),
                        reg["searches"][-1])
    if registry_run is not None:  # the registry's own search path, measured on it
        main_run = {**(main_run or {}), **registry_run["search"]}
    exact_summary = latency_summary(exact_lat)
    out = {
        "people": n, "mode": "distinct", "model_id": model_id, "usearch": usearch.__version__,
        "cpus": os.cpu_count(), "top_k": k, "threshold": cfg.match.max_distance,
        "registry_params": dict(zip(("connectivity", "expansion_add", "expansion_search"),
                                    reg_params)),
        "rule": {"t0": RULE_T0, "n0": RULE_N0, "slope_per_decade": RULE_SLOPE,
                 "margin": RULE_MARGIN, "threshold_at_n": rule_threshold(n)},
        "search_p50_ms": main_run["p50_ms"] if main_run else exact_summary["p50_ms"],
        "search_p99_ms": main_run["p99_ms"] if main_run else exact_summary["p99_ms"],
        # the server applies the large-gallery rule, so "genuine" means named under it
        "genuine_recall_at_1": main_run["genuine_recall_at_1_rule"] if main_run else 1.0,
        "decision_agreement": main_run["decision_agreement_rule"] if main_run else 1.0,
        # the same at a fixed threshold 1.0 instead of the rule
        "genuine_recall_at_1_fixed_1.0": (main_run or {}).get("genuine_recall_at_1", 1.0),
        "decision_agreement_fixed_1.0": (main_run or {}).get("decision_agreement", 1.0),
        "search_path": (f"hnsw {reg_params[0]}/{reg_params[1]} {REGISTRY_DTYPE} ef "
                        f"{reg_params[2]}, top {RESCORE_K} re-scored in f32"
                        if n > registry_module.EXACT_SEARCH_MAX_VECTORS else "exact"),
        # what the registry itself takes (registry_at_scale); the index-only paths of
        # startup_distinct / deletion are kept under "startup" / "deletion"
        "delete_s": registry_run["delete_s"] if registry_run else None,
        "startup_s": registry_run["startup_s"] if registry_run else None,
        "registry": registry_run,
        "fpir": top["fpir_rule"], "fnir": top["fnir_rule"],
        "exact": {**exact_summary, "agrees_with_numpy": exact_check,
                  "ground_truth_s": r4(truth_s)},
        "data": {k_: v_ for k_, v_ in d.info.items()},
        "open_set": open_sets, "hnsw": hnsw, "deletion": delete, "startup": start,
        "elapsed_s": r4(time.perf_counter() - t0),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str))
    np.savez_compressed(args.json.with_suffix(".validation.npz"),
                        **{k_: np.asarray(v_) for k_, v_ in samples.items()})
    print_distinct(out)
    print(f"wrote {args.json}")
    return 0


def print_distinct(out: dict[str, Any]) -> None:
    v = out["data"]["validation"]
    print(f"distinct people: N = {out['people']}, model {out['model_id']}, "
          f"two-covariance model {out['data']['model']}")
    print(f"validation, nearest-impostor distance at equal N = {v['gallery_size']} "
          "(leave one speaker out):")
    print(f"{'':<20} {'n':>6} {'p0.1':>7} {'p1':>7} {'p5':>7} {'p50':>7} {'p99':>7} "
          f"{'p99.9':>7} {'<=0.9':>7} {'<=1.0':>7}")
    for name, t in [*v["nearest_impostor"].items(),
                    *((f"genuine {k}", x) for k, x in v["genuine"].items())]:
        print(f"{name:<20} {t['n']:>6} {t['p0.1']:>7} {t['p1']:>7} {t['p5']:>7} {t['p50']:>7} "
              f"{t['p99']:>7} {t['p99.9']:>7} {t['share_le_0.9']:>7} {t['share_le_1.0']:>7}")
    print()
    print(f"open set (exact search); rule: t(N) = {RULE_T0} - {RULE_SLOPE} * log10(N / "
          f"{RULE_N0}), margin {RULE_MARGIN}")
    print(f"{'N':>8} {'FPIR@1 real':>11} {'syn':>6} {'FNIR@1 real':>11} {'syn':>6} "
          f"{'t(N)':>6} {'FPIR rule real':>14} {'syn':>6} {'FNIR rule real':>14} {'syn':>6}")
    for o in out["open_set"]:
        print(f"{o['n']:>8} {o['fpir_real_at_1.0']:>11} {o['fpir_syn_at_1.0']:>6} "
              f"{o['fnir_real_at_1.0']:>11} {o['fnir_syn_at_1.0']:>6} {o['rule_threshold']:>6} "
              f"{o['fpir_real_rule']:>14} {o['fpir_syn_rule']:>6} {o['fnir_real_rule']:>14} "
              f"{o['fnir_syn_rule']:>6}")
    print()
    for h in out["hnsw"]:
        if "error" in h:
            print(f"HNSW {h['connectivity']}/{h['expansion_add']} {h['dtype']}: {h['error']}")
            continue
        print(f"HNSW {h['connectivity']}/{h['expansion_add']} {h['dtype']}, build "
              f"{h['build_s']} s on {h['build_threads']} thread(s), "
              f"{h['keys_not_finding_themselves']} keys not finding themselves")
        for s in h["searches"]:
            print(f"   ef {s['expansion_search']:>4}: p50 {s['p50_ms']} ms p99 {s['p99_ms']} ms "
                  f"genuine recall@1 {s['genuine_recall_at_1']} agreement "
                  f"{s['decision_agreement']} (rule {s['decision_agreement_rule']})")
    keys = ("people", "search_p50_ms", "search_p99_ms", "genuine_recall_at_1",
            "decision_agreement", "delete_s", "startup_s", "fpir", "fnir")
    print("summary: " + ", ".join(f"{k_} {out[k_]}" for k_ in keys))


def plot_distinct(paths: list[Path], png: Path) -> bool:
    """``--plot-distinct``: open-set curves against N (from the run with the most open-set
    sizes), the real-vs-synthetic validation, and HNSW latency against recall per size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install -e '.[tools]')")
        return False
    runs = [json.loads(p.read_text()) for p in paths]
    big = max(runs, key=lambda r: len(r["open_set"]))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    ns = [o["n"] for o in big["open_set"]]
    for key, label, style in (("fpir_real_at_1.0", "real never-enrolled, 1.0", "r-o"),
                              ("fpir_syn_at_1.0", "synthetic never-enrolled, 1.0", "r--s"),
                              ("fpir_real_at_0.9", "real, 0.9", "y-o"),
                              ("fpir_syn_at_0.9", "synthetic, 0.9", "y--s"),
                              ("fpir_real_rule", "real, rule", "g-o"),
                              ("fpir_syn_rule", "synthetic, rule", "g--s")):
        ax.plot(ns, [100 * o[key] for o in big["open_set"]], style, label=label, ms=4)
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_yscale("log")
    ax.set_ylim(0.05, 100)
    ax.set_title("FPIR: never-enrolled voice named as someone (%, 0 not shown)")
    ax2 = axes[0][1]
    for key, label, style in (("fnir_real_at_1.0", "real enrolled, 1.0", "r-o"),
                              ("fnir_syn_at_1.0", "synthetic enrolled, 1.0", "r--s"),
                              ("fnir_real_at_0.9", "real, 0.9", "y-o"),
                              ("fnir_syn_at_0.9", "synthetic, 0.9", "y--s"),
                              ("fnir_real_rule", "real, rule", "g-o"),
                              ("fnir_syn_rule", "synthetic, rule", "g--s")):
        ax2.plot(ns, [100 * o[key] for o in big["open_set"]], style, label=label, ms=4)
    ax2.set_title("FNIR: enrolled voice not named correctly (%)")
    r = big["rule"]
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel(f"people enrolled N (rule: t = {r['t0']} - {r['slope_per_decade']} "
                     f"log10(N/{r['n0']}), margin {r['margin']})")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    ax3 = axes[1][0]
    npz = Path(str(paths[runs.index(big)]).replace(".json", ".validation.npz"))
    if npz.is_file():
        s = np.load(npz)
        v = big["data"]["validation"]
        for key, label, style in (("real", "real, leave one speaker out", "r-"),
                                  ("synthetic", "synthetic, same counts", "b-"),
                                  ("real_vs_synthetic", "real utterances vs synthetic gallery",
                                   "m--"),
                                  ("genuine_real", "genuine real (own centroid)", "r:"),
                                  ("genuine_synthetic", "genuine synthetic", "b:")):
            x = np.sort(s[key])
            ax3.plot(x, np.arange(1, len(x) + 1) / len(x), style, label=label)
        ax3.set_yscale("log")
        ax3.set_ylim(1e-3, 1)
        ax3.set_xlabel("distance")
        ax3.set_title(f"validation at N = {v['gallery_size']}: nearest impostor (solid) and "
                      "genuine (dotted), CDF")
        ax3.axvline(1.0, color="k", lw=0.6)
        ax3.grid(True, which="both", alpha=0.3)
        ax3.legend(fontsize=7)
    ax4 = axes[1][1]
    for run in sorted(runs, key=lambda r: r["people"]):
        for h in run["hnsw"]:
            if "error" in h:
                continue
            if h["build_threads"] != 1 and h["dtype"] == "f32" and h["connectivity"] == 16:
                continue
            xs = [s_["p99_ms"] for s_ in h["searches"]]
            rule = all(s_.get("genuine_recall_at_1_rule") is not None for s_ in h["searches"])
            ys = [s_["genuine_recall_at_1_rule" if rule else "genuine_recall_at_1"]
                  for s_ in h["searches"]]
            ax4.plot(xs, ys, "-o" if rule else ":o", ms=3,
                     label=f"{run['people']:,}: {h['connectivity']}/{h['expansion_add']} "
                           f"{h['dtype']}" + ("" if rule else " (named at 1.0)"))
    ax4.axvline(2.0, color="r", lw=0.6)
    ax4.axhline(0.99, color="r", lw=0.6)
    ax4.set_xscale("log")
    ax4.set_xlabel("single-query p99 (ms), expansion_search 32..256")
    ax4.set_title("recall@1 against exact search, genuine queries the rule names")
    ax4.grid(True, which="both", alpha=0.3)
    ax4.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    help="gallery sizes, comma-separated (default %(default)s)")
    ap.add_argument("--small", action="store_true",
                    help="CI run: sizes 1000,5000, few embeddings, few queries")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="HNSW configurations connectivity:expansion_add[:dtype] "
                         "(default %(default)s; the registry's own is always added)")
    ap.add_argument("--ef-search", default=DEFAULT_EF_SEARCH,
                    help="expansion_search values to try (default %(default)s)")
    ap.add_argument("--queries", type=int, default=2000, help="recall/latency queries")
    ap.add_argument("--noise", choices=("speaker", "isotropic"), default="speaker",
                    help="perturbation: within-speaker covariance (default) or white")
    ap.add_argument("--api-people", type=int, default=1000,
                    help="people enrolled through Registry.add_person (the rest in bulk)")
    ap.add_argument("--no-startup", action="store_true", help="skip the registry start-up part")
    ap.add_argument("--startup-only", action="store_true",
                    help="only the registry start-up part (writes OUT/gallery-startup.json)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out")
    ap.add_argument("--cache", type=Path, default=REPO_ROOT / "bench" / "out",
                    help="folder of the embedding cache (default %(default)s)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="folder for the temporary registries (default: system temp)")
    ap.add_argument("--speech", type=Path, default=REPO_ROOT.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=REPO_ROOT / "config.yaml")
    ap.add_argument("--people", type=int, default=None,
                    help="distinct mode: one gallery of N distinct people (real enrolled "
                         "speakers + synthetic people of a two-covariance model); writes --json")
    ap.add_argument("--json", type=Path, default=None,
                    help="distinct mode: output file (default OUT/gallery-people-N.json)")
    ap.add_argument("--distinct-configs", default=DISTINCT_CONFIGS,
                    help="distinct mode: HNSW runs connectivity:expansion_add:dtype:threads "
                         "(default %(default)s)")
    ap.add_argument("--plot-distinct", type=Path, nargs="+", default=None,
                    help="plot the JSON files of --people runs into OUT/gallery_distinct.png")
    ap.add_argument("--no-open-set", action="store_true",
                    help="distinct mode: skip the open-set figures (fpir/fnir null), e.g. "
                         "for a timing run on a cached index")
    ap.add_argument("--index-cache", type=Path, default=None,
                    help="distinct mode: keep built indexes in this folder and reuse them "
                         "(a 1 M build takes ~40 min)")
    ap.add_argument("--no-index", action="store_true",
                    help="distinct mode: open-set figures only (no HNSW, deletion, start-up)")
    args = ap.parse_args(argv)
    if args.plot_distinct:
        png = args.out / "gallery_distinct.png"
        return 0 if plot_distinct(args.plot_distinct, png) and print(f"wrote {png}") is None \
            else 1
    # SIGTERM ends the run like Ctrl-C, so the temporary registries are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.small:
        args.sizes, args.queries, args.ef_search = "1000,5000", 200, "32,64"
        args.configs = "16:128"
        args.api_people = min(args.api_people, 100)
    t0 = time.perf_counter()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    ef_search = [int(s) for s in args.ef_search.split(",") if s.strip()]
    reg_params = registry_params()
    configs = [HnswConfig.parse(c) for c in args.configs.split(",") if c.strip()]
    reg_cfg = HnswConfig(reg_params[0], reg_params[1], REGISTRY_DTYPE)
    if reg_cfg not in configs:
        configs.insert(0, reg_cfg)
    if reg_params[2] not in ef_search:
        ef_search = sorted(ef_search + [reg_params[2]])
    cfg = load_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)

    e, model_id = load_embeddings(cfg, args.speech, args.cache, args.small)
    if args.people is not None:
        if args.json is None:
            args.json = args.out / f"gallery-people-{args.people}.json"
        if "--ef-search" not in " ".join(argv if argv is not None else sys.argv):
            args.ef_search = "32,64" if args.small else DISTINCT_EF
        if args.small and "--distinct-configs" not in " ".join(
                argv if argv is not None else sys.argv):
            args.distinct_configs = "32:256:i8:2,16:128:f32:2,16:128:f32:1,16:128:bf16:2"
        return run_people(args, e, model_id, cfg, reg_params)
    sp = split(e)
    rng = np.random.default_rng(SEED)
    within = within_speaker_distances(e, np.concatenate([sp.sources, sp.genuine]))
    between = between_speaker_distances(e, np.concatenate([sp.sources, sp.genuine]), 20000, rng)
    target = float(np.median(within))
    pert = Perturber(e, sp.sources, args.noise, target, rng)
    order = rng.permutation(sp.sources)
    src, src_speaker = e.vectors[order], e.speaker[order]
    probe = src[rng.choice(len(src), min(2000, len(src)))]
    diff = pert.copies(probe) - probe
    copy_d = distances(np.einsum("ij,ij->i", diff, diff))

    # recall queries: held-out real vectors and perturbed copies of them, half from
    # enrolled (gallery) speakers' held-out files, half from never-enrolled speakers
    pools = []
    for rows in (sp.genuine, sp.impostor):
        real = e.vectors[rows]
        pool = np.concatenate([real, pert.copies(real)])
        pools.append(pool[rng.permutation(len(pool))][:args.queries // 2])
    q_all = np.concatenate(pools)
    is_enrolled = np.arange(len(q_all)) < len(pools[0])
    mix = rng.permutation(len(q_all))
    q_all, is_enrolled = q_all[mix], is_enrolled[mix]
    queries = {"all": np.ascontiguousarray(q_all), "all_enrolled": is_enrolled,
               "genuine": e.vectors[sp.genuine], "impostor": e.vectors[sp.impostor]}
    data = {
        "datasets": sorted(set(e.dataset.tolist())), "real_vectors": len(e.vectors),
        "gallery_sources": len(sp.sources), "genuine_queries": len(sp.genuine),
        "impostor_queries": len(sp.impostor),
        "gallery_speakers": len(set(e.speaker[sp.sources].tolist())),
        "impostor_speakers": len(set(e.speaker[sp.impostor].tolist())),
        "recall_queries": len(q_all),
        "recall_queries_enrolled": int(is_enrolled.sum()),
        "within_speaker_distance": {"pairs": len(within), "p10": r4(pctl(within, 10)),
                                    "p50": r4(pctl(within, 50)), "p90": r4(pctl(within, 90))},
        "between_speaker_distance_p50": r4(pctl(between, 50)),
        "noise": args.noise, "sigma": r4(pert.sigma),
        "copy_distance": {"p10": r4(pctl(copy_d, 10)), "p50": r4(pctl(copy_d, 50)),
                          "p90": r4(pctl(copy_d, 90))},
    }
    log(f"{len(e.vectors)} real vectors: {len(sp.sources)} gallery sources, "
        f"{len(sp.genuine)} genuine, {len(sp.impostor)} impostor; same-speaker distance "
        f"p50 {data['within_speaker_distance']['p50']}, copy sigma {data['sigma']}")

    if args.startup_only:
        return startup_only(args, sizes, src, pert, model_id, cfg, reg_params, queries["all"][0])
    results = []
    for n in sizes:
        results.append(run_size(n, e, sp, pert, src, src_speaker, queries, configs, ef_search,
                                reg_params, cfg, model_id, args))
    out = {
        "model_id": model_id, "usearch": usearch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "top_k": cfg.match.top_k, "threshold": cfg.match.max_distance,
        "exact_search_max_vectors": registry_module.EXACT_SEARCH_MAX_VECTORS,
        "registry_params": dict(zip(("connectivity", "expansion_add", "expansion_search"),
                                    reg_params)),
        "target": {"ms": TARGET_MS, "recall_at_1": TARGET_RECALL},
        "data": data, "sizes": results, "choice": choose(results),
        "elapsed_s": r4(time.perf_counter() - t0),
    }
    (args.out / "gallery.json").write_text(json.dumps(out, indent=1))
    print_tables(out)
    print(f"\nwrote {args.out / 'gallery.json'}")
    if plot(out, args.out / "gallery.png"):
        print(f"wrote {args.out / 'gallery.png'}")
    print(f"elapsed {out['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
