"""Scoring study: how should an enrolled person be scored against a test embedding?

    python bench/scoring_study.py [--small] [--out bench/out] [--speech DIR]

Same data, enrolment (<= 8 s of VAD speech, Speech Commands 4 words) and test items as
``bench/accuracy.py`` (its functions are imported, not copied), scored in several ways:

1. ``centroid``: the Euclidean distance to the embedding of the whole enrolment
   (what the server does today: one voiceprint per enrolment, speech-weighted mean).
2. several voiceprints per person, from the same <= 8 s of enrolment speech cut into
   ``pieces`` of ~2.5 s or per ``file`` (for Speech Commands: per word):
   ``*_min`` (distance to the nearest piece), ``*_mean`` (mean distance to the pieces),
   ``*_cent`` (distance to the speech-weighted, renormalised mean of the pieces).
3. ``asnorm_N``: adaptive s-norm of the cosine score against the top-N of a cohort of
   impostor embeddings (3 s pieces of LibriSpeech train-clean-100 voices, CC BY 4.0,
   disjoint from every test and enrolled speaker). The 100 train-clean voices are split
   in two halves: the cohort of one half normalises the trials whose never-enrolled
   impostors come from the other half, and vice versa (2 folds; every impostor is
   scored with a cohort that never contains its voice).
4. Speech Commands only: the test embedding of 3-4 joined one-second words vs the
   mean of the words' unit embeddings (``+words``).

Every method yields a "distance-like" score (lower = more alike; for AS-norm it is the
negated normalised score). Measures: closed-set top-1 (per dataset and pooled, everyone
enrolled together), EER (1:1, all pairs), and the pooled open-set trade-off: FAR of
never-enrolled voices (nearest enrolled person) and leave-own-out FAR (each test item
against everyone but its own person), the loosest threshold with both FARs <= 2 % and
the FRR there, plus the same threshold chosen on one half of the people/impostors and
applied to the other half (2-fold, honest transfer). For AS-norm the threshold is also
mapped back to the protocol's distance scale (see ``to_distance``).

Prints tables and writes ``OUT/scoring_study.json``. ``--small`` is a quick run (< 1 min).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import accuracy as acc
import numpy as np

from streamer.config import load_config
from streamer.evaluation import SAMPLE_RATE, eer, enrol_test_split, load_manifest

PIECE_S = 2.5          # target length of enrolment pieces
COHORT_PIECE_S = 3.0   # cohort embeddings: consecutive 3 s pieces of VAD speech
COHORT_PIECES = 4      # at most this many per cohort voice
COHORT_NS = (25, 50, 100, 200)
TARGET_FAR = 0.02
TARGET_FRR = 0.05
MIN_PIECE_S = 0.4      # shorter file pieces are merged into their neighbour


# -- data -----------------------------------------------------------------------------------


@dataclass
class Data:
    """One dataset: the accuracy.py run plus enrolment pieces and (SC) per-word tests."""

    run: acc.DatasetRun
    pieces: list[np.ndarray]         # per person [k, d]
    piece_s: list[np.ndarray]        # per person [k] seconds
    files: list[np.ndarray]
    file_s: list[np.ndarray]
    words: np.ndarray | None         # [n_tests, d] mean of per-word unit embeddings


def split_equal(x: np.ndarray, piece_s: float) -> list[np.ndarray]:
    n = max(1, int(round(len(x) / SAMPLE_RATE / piece_s)))
    edges = np.linspace(0, len(x), n + 1).astype(int)
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def split_files(b: acc.Bench, paths: Sequence[Path], x: np.ndarray) -> list[np.ndarray]:
    """Cut the capped joined enrolment speech ``x`` at the file boundaries."""
    lens = [len(b.speech(p)) for p in paths]
    if sum(lens) < acc.MIN_SPEECH_S * SAMPLE_RATE:  # accuracy.py fell back to raw audio
        return [x]
    edges = np.concatenate([[0], np.cumsum(lens)])
    parts = [x[a:min(e, len(x))] for a, e in zip(edges[:-1], edges[1:]) if a < len(x)]
    out: list[np.ndarray] = []
    for part in parts:  # merge too-short pieces into the previous one
        if out and len(part) < MIN_PIECE_S * SAMPLE_RATE:
            out[-1] = np.concatenate([out[-1], part])
        elif not out or len(out[-1]) >= MIN_PIECE_S * SAMPLE_RATE:
            out.append(part)
        else:
            out[-1] = np.concatenate([out[-1], part])
    return [p for p in out if len(p)]


def build(b: acc.Bench, name: str, folder: Path, enrol_s: float, join: bool,
          prefix: str | None, max_spk: int | None, max_tests: int | None) -> Data:
    utts = load_manifest(folder)
    if prefix:
        utts = [u for u in utts if u.path.relative_to(folder).as_posix().startswith(prefix)]
    run = acc.build_dataset(b, name, utts, enrol_s, join, max_spk, max_tests)
    enrol, test = enrol_test_split(utts, enrol_s)
    pieces, piece_s, files, file_s = [], [], [], []
    for p in run.people:
        paths = [u.path for u in enrol[p]]
        x = b.item(paths, cap_s=acc.ENROL_S)
        for splitter, vecs, secs in ((lambda y: split_equal(y, PIECE_S), pieces, piece_s),
                                     (lambda y: split_files(b, paths, y), files, file_s)):
            parts = splitter(x)
            vecs.append(np.array([b.embed(q) for q in parts]))
            secs.append(np.array([len(q) / SAMPLE_RATE for q in parts]))
    words = None
    if join:  # the same item groups as accuracy.build_dataset, each word embedded alone
        vecs = []
        for p in run.people:
            paths = [u.path for u in test[p]]
            groups = [paths[:i] + paths[i + 1:] for i in range(len(paths))] if len(paths) > 3 else []
            groups.append(paths)
            for g in groups:
                m = np.mean([b.embed(b.item([q])) for q in g], axis=0)
                vecs.append(m / np.linalg.norm(m))
        words = np.array(vecs)
        assert len(words) == len(run.tests), (len(words), len(run.tests))
    return Data(run, pieces, piece_s, files, file_s, words)


def cohort_pieces(b: acc.Bench, x: np.ndarray) -> list[np.ndarray]:
    n = int(COHORT_PIECE_S * SAMPLE_RATE)
    k = min(COHORT_PIECES, len(x) // n)
    return [x[i * n:(i + 1) * n] for i in range(k)] or [x]


# -- scoring ----------------------------------------------------------------------------------


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def wmean(vecs: np.ndarray, w: np.ndarray) -> np.ndarray:
    return unit(w @ vecs)


def multi_scores(T: np.ndarray, sets: Sequence[np.ndarray], how: str) -> np.ndarray:
    """[n, P] min / mean distance of each test to each person's voiceprint set."""
    out = np.empty((len(T), len(sets)))
    for j, V in enumerate(sets):
        d = acc.distances(T, V)
        out[:, j] = d.min(axis=1) if how == "min" else d.mean(axis=1)
    return out


def topn_stats(X: np.ndarray, C: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the top-n cosine scores of each row of X against the cohort C."""
    s = X @ C.T
    n = min(n, s.shape[1])
    top = -np.partition(-s, n - 1, axis=1)[:, :n]
    return top.mean(axis=1), top.std(axis=1) + 1e-6


def asnorm(T: np.ndarray, E: np.ndarray, C: np.ndarray, n: int) -> np.ndarray:
    """Adaptive s-norm score [n_tests, P] (higher = more alike)."""
    s = T @ E.T
    mt, st = topn_stats(T, C, n)
    me, se = topn_stats(E, C, n)
    return 0.5 * ((s - me[None, :]) / se[None, :] + (s - mt[:, None]) / st[:, None])


# -- metrics ------------------------------------------------------------------------------------


def closed(D: np.ndarray, lab: np.ndarray) -> dict[str, Any]:
    own = D[np.arange(len(lab)), lab]
    mask = np.arange(D.shape[1])[None, :] != lab[:, None]
    imp = D[mask]
    e, thr = eer(own, imp) if len(imp) else (math.nan, math.nan)
    others = np.where(mask, D, np.inf)
    return {"top1": float(np.mean(np.argmin(D, axis=1) == lab)), "eer": e, "eer_thr": thr,
            "genuine": own, "loo": others.min(axis=1), "impostor_pairs": imp,
            "top1_ok": np.argmin(D, axis=1) == lab}


def far_thr(imp: np.ndarray, loo: np.ndarray, target: float, gen: np.ndarray) -> float:
    """Loosest threshold with FAR of both lists <= target: the midpoint between the first
    impostor score that must be rejected and the next lower observed score (so accept
    ``<`` and ``<=`` agree)."""
    best = -np.inf
    for x in (imp, loo):
        x = np.sort(x[np.isfinite(x)])
        if not len(x):
            continue
        k = int(math.floor(target * len(x) + 1e-9))
        lim = x[k] if k < len(x) else np.inf
        # largest value strictly below lim (observed values only, so ties stay rejected)
        best = lim if best == -np.inf else min(best, lim)
    if not np.isfinite(best):
        return float(best)
    every = np.concatenate([gen, imp, loo[np.isfinite(loo)]])
    below = every[every < best]
    return float((below.max() + best) / 2) if len(below) else float(best)


def rates(gen: np.ndarray, imp: np.ndarray, loo: np.ndarray, ok: np.ndarray, thr: float,
          strict: bool = True) -> dict[str, float]:
    acc_ = (lambda x: x < thr) if strict else (lambda x: x <= thr)
    loo = loo[np.isfinite(loo)]
    return {"far_imp": float(np.mean(acc_(imp))) if len(imp) else math.nan,
            "far_loo": float(np.mean(acc_(loo))) if len(loo) else math.nan,
            "frr": float(np.mean(~acc_(gen))),
            # open-set identification miss: not (nearest is right and accepted)
            "miss": float(np.mean(~(acc_(gen) & ok)))}


def frr_thr(gen: np.ndarray, target: float) -> float:
    """Tightest threshold (accept <= thr) with FRR <= target."""
    g = np.sort(gen)
    k = int(math.ceil((1 - target) * len(g) - 1e-9)) - 1
    return float(g[max(k, 0)])


# -- the study ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="quick subset (< 1 min)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cfg = load_config(args.config)
    b = acc.Bench(cfg)
    S = args.speech
    if args.small:
        specs = [(acc.LIBRI, S / acc.LIBRI, acc.ENROL_S, False, None, 3, 2),
                 ("vctk_4spk", S / "vctk_4spk", acc.ENROL_S, False, None, 2, 2),
                 (acc.SC, S / acc.SC, 4.0, True, None, 4, None)]
        n_imp = 12
    else:
        specs = [(acc.LIBRI, S / acc.LIBRI, acc.ENROL_S, False, None, None, None),
                 ("vctk_4spk", S / "vctk_4spk", acc.ENROL_S, False, None, None, None),
                 ("aishell1_2spk", S / "aishell1_2spk", acc.ENROL_S, False, None, None, None),
                 ("commonvoice_fa", S / "commonvoice_fa", acc.ENROL_S, False, None, None, None),
                 (acc.SC, S / acc.SC, 4.0, True, None, None, None),
                 ("ami_segments", S / acc.AMI, acc.ENROL_S, False, "segments/", None, None)]
        n_imp = None
    acc.log("embedding enrolments (whole, pieces, files) and test items")
    data = [build(b, *spec) for spec in specs]

    # never-enrolled LibriSpeech train-clean-100 voices: impostors (full item + 3 s crop,
    # as in accuracy.py) and cohort pieces, split in two halves by manifest order
    imp_utts = load_manifest(S / acc.IMPOSTORS)[:n_imp]
    prog = acc.Progress("impostors + cohort", len(imp_utts))
    imp_full, imp_c3, imp_c3_idx, cohort, cohort_owner = [], [], [], [], []
    n3 = int(3.0 * SAMPLE_RATE)
    for i, u in enumerate(imp_utts):
        x = b.item([u.path])
        imp_full.append(b.embed(x))
        if len(x) >= n3:
            a = (len(x) - n3) // 2
            imp_c3.append(b.embed(x[a:a + n3]))
            imp_c3_idx.append(i)
        for q in cohort_pieces(b, x):
            cohort.append(b.embed(q))
            cohort_owner.append(i)
        prog.step()
    prog.close()
    imp_full_a, imp_c3_a = np.array(imp_full), np.array(imp_c3)
    imp_c3_idx_a, cohort_a, cohort_owner_a = np.array(imp_c3_idx), np.array(cohort), np.array(cohort_owner)
    half = len(imp_utts) // 2
    imp_half = (np.arange(len(imp_utts)) >= half).astype(int)  # 0: first half, 1: second
    cohorts = [cohort_a[imp_half[cohort_owner_a] == f] for f in (0, 1)]
    cohort_voices = [int(np.sum(imp_half == f)) for f in (0, 1)]

    # pooled arrays
    offsets = np.cumsum([0] + [len(d.run.people) for d in data])
    P = int(offsets[-1])
    ds_of_person = np.concatenate([[k] * len(d.run.people) for k, d in enumerate(data)])
    E_whole = np.concatenate([d.run.centroids for d in data])

    def cat(attr: str) -> list[Any]:
        return [x for d in data for x in getattr(d, attr)]

    pieces, piece_s, files, file_s = cat("pieces"), cat("piece_s"), cat("files"), cat("file_s")
    E_pcent = np.array([wmean(v, w) for v, w in zip(pieces, piece_s)])
    E_fcent = np.array([wmean(v, w) for v, w in zip(files, file_s)])
    lab = np.concatenate([np.asarray(d.run.test_labels) + o for d, o in zip(data, offsets)])
    T_join = np.concatenate([d.run.tests for d in data])
    T_words = np.concatenate([d.words if d.words is not None else d.run.tests for d in data])
    sc_k = [k for k, d in enumerate(data) if d.words is not None]
    c3_lab = np.concatenate([np.asarray(d.run.crops[3.0][0], dtype=int) + o for d, o in zip(data, offsets)])
    T_c3 = np.concatenate([d.run.crops[3.0][1] for d in data if len(d.run.crops[3.0][1])])

    # A method: (T, imp, fold) -> [n, P] distance-like scores. Conditions: test sets.
    def raw(E: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray]:
        return lambda T, f: acc.distances(T, E)

    def multi(sets: list[np.ndarray], how: str) -> Callable[[np.ndarray, int], np.ndarray]:
        return lambda T, f: multi_scores(T, sets, how)

    def asn(E: np.ndarray, n: int) -> Callable[[np.ndarray, int], np.ndarray]:
        return lambda T, f: -asnorm(T, E, cohorts[f], n)

    methods: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "centroid": raw(E_whole),
        "pieces_min": multi(pieces, "min"), "pieces_mean": multi(pieces, "mean"),
        "pieces_cent": raw(E_pcent),
        "files_min": multi(files, "min"), "files_mean": multi(files, "mean"),
        "files_cent": raw(E_fcent),
    }
    for n in COHORT_NS:
        methods[f"asnorm{n}"] = asn(E_whole, n)
    methods["asnorm100_pieces_cent"] = asn(E_pcent, 100)
    methods["asnorm100_files_cent"] = asn(E_fcent, 100)
    conditions = {
        "whole": (T_join, lab, imp_full_a, np.arange(len(imp_full_a))),
        "whole+words": (T_words, lab, imp_full_a, np.arange(len(imp_full_a))),
        "crop3s": (T_c3, c3_lab, imp_c3_a, imp_c3_idx_a),
    }

    results: dict[str, Any] = {}
    mapping: dict[str, Any] = {}
    t_score: dict[str, float] = {}
    for mname, fn in methods.items():
        for cname, (T, lb, IMP, imp_idx) in conditions.items():
            if cname == "whole+words" and not sc_k:
                continue
            ts = time.perf_counter()
            # 2 folds: fold f normalises with cohort half f; impostors of the other half
            D = [fn(T, f) for f in (0, 1)]
            Di = [fn(IMP[imp_half[imp_idx] == 1 - f], f) for f in (0, 1)]
            t_score[f"{mname}/{cname}"] = time.perf_counter() - ts
            row: dict[str, Any] = {"per_dataset": {}}
            # pooled
            cl = [closed(Df, lb) for Df in D]
            gen = np.concatenate([c["genuine"] for c in cl])
            loo = np.concatenate([c["loo"] for c in cl])
            ok = np.concatenate([c["top1_ok"] for c in cl])
            imp = np.concatenate([x.min(axis=1) for x in Di])
            pairs_i = np.concatenate([c["impostor_pairs"] for c in cl])
            e, e_thr = eer(gen, pairs_i)
            thr2 = far_thr(imp, loo, TARGET_FAR, gen)
            thr5 = frr_thr(gen, TARGET_FRR)
            row["pooled"] = {
                "people": P, "tests": len(lb), "impostors": len(IMP),
                "top1": float(np.mean(ok)), "eer": e, "eer_thr": e_thr,
                "thr_far2": thr2, "at_far2": rates(gen, imp, loo, ok, thr2),
                "thr_frr5": thr5, "at_frr5": rates(gen, imp, loo, ok, thr5, strict=False),
            }
            if mname in ("centroid", "pieces_cent", "files_cent"):
                row["pooled"]["at_1.0"] = rates(gen, imp, loo, ok, 1.0, strict=False)
            # honest transfer: threshold from half h of people / impostors, applied to the other
            ph_t = np.concatenate([lb % 2] * 2)
            ph_i = np.concatenate([np.arange(len(x)) % 2 for x in Di])
            cv = {"far_imp": 0, "far_loo": 0, "frr": 0, "miss": 0}
            for h in (0, 1):
                th = far_thr(imp[ph_i == h], loo[ph_t == h], TARGET_FAR, gen[ph_t == h])
                r = rates(gen[ph_t != h], imp[ph_i != h], loo[ph_t != h], ok[ph_t != h], th)
                for k in cv:
                    cv[k] += r[k] / 2
            row["pooled"]["cv_at_far2"] = cv
            # per dataset (its own people only; impostors vs its people; pooled thr2)
            for k, d in enumerate(data):
                cols = np.flatnonzero(ds_of_person == k)
                rows_ = np.flatnonzero(ds_of_person[lb] == k)
                if not len(rows_):
                    continue
                lk = lb[rows_] - offsets[k]
                clk = [closed(Df[np.ix_(rows_, cols)], lk) for Df in D]
                gk = np.concatenate([c["genuine"] for c in clk])
                lok = np.concatenate([c["loo"] for c in clk])
                okk = np.concatenate([c["top1_ok"] for c in clk])
                ik = np.concatenate([x[:, cols].min(axis=1) for x in Di])
                pi = np.concatenate([c["impostor_pairs"] for c in clk])
                ek = eer(gk, pi) if len(pi) else (math.nan, math.nan)
                row["per_dataset"][d.run.name] = {
                    "people": len(cols), "tests": len(rows_), "top1": float(np.mean(okk)),
                    "eer": ek[0], "at_pooled_far2": rates(gk, ik, lok, okk, thr2)}
            results.setdefault(mname, {})[cname] = row
            if mname.startswith("asnorm") and cname == "whole":
                E_used = E_pcent if "pieces" in mname else E_fcent if "files" in mname else E_whole
                mapping[mname] = distance_map(T, E_used, D[0], gen, imp, loo, ok, thr2)
    results = clean(results)
    elapsed = time.perf_counter() - t0
    meta = {
        "small": args.small, "model_id": b.emb.model_id, "seconds": round(elapsed, 1),
        "enrol_speech_cap_s": acc.ENROL_S, "piece_s": PIECE_S,
        "datasets": {d.run.name: {"people": len(d.run.people), "tests": len(d.run.tests),
                                  "pieces_per_person": float(np.mean([len(v) for v in d.pieces])),
                                  "files_per_person": float(np.mean([len(v) for v in d.files])),
                                  "enrol_speech_s_mean": float(np.mean(d.run.enrol_speech_s))}
                     for d in data},
        "impostors": len(imp_utts), "impostors_crop3s": len(imp_c3),
        "cohort": {"source": f"{acc.IMPOSTORS} (LibriSpeech train-clean-100, CC BY 4.0)",
                   "embeddings_per_fold": [len(c) for c in cohorts],
                   "voices_per_fold": cohort_voices,
                   "piece_s": COHORT_PIECE_S, "max_pieces_per_voice": COHORT_PIECES,
                   "folds": "fold f: cohort = half f of the train-clean voices, never-enrolled "
                            "impostor trials = the other half; genuine and leave-own-out trials "
                            "are scored in both folds and pooled"},
        "target_far": TARGET_FAR, "target_frr": TARGET_FRR,
        "scoring_ms_per_condition_both_folds": {k: round(1000 * v, 1) for k, v in t_score.items()},
        "vad_fallbacks": b.fallbacks,
    }
    out = {"meta": meta, "results": results, "distance_map": clean(mapping)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "scoring_study.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    report(out)
    print(f"\nwrote {path} in {elapsed:.0f} s")
    return 0


def distance_map(T: np.ndarray, E: np.ndarray, D0: np.ndarray, gen: np.ndarray,
                 imp: np.ndarray, loo: np.ndarray, ok: np.ndarray, thr2: float) -> dict[str, Any]:
    """A monotone map from the AS-norm score z back to the protocol's distance scale.

    ``distance_eq(z) = sqrt(2 - 2 * clip(0.5 + slope * (z - z_cal), -1, 1))``: ``z_cal``
    (the z threshold with both FARs <= 2 % on this data) maps to distance 1.0 (cosine
    0.5), and ``slope`` is the least-squares slope of the raw cosine on z over all
    test x person pairs (fold 0), so distances keep roughly their raw spread. Then
    ``distance_eq <= 1.0`` accepts exactly the pairs with ``z >= z_cal`` (ties aside).
    Calibrated on the evaluation data itself (optimistic; ``cv_at_far2`` is the honest
    transfer of a threshold chosen on other people).
    """
    z_cal = -thr2
    z = -D0.ravel()
    cos = (T @ E.T).ravel()
    slope = float(np.polyfit(z, cos, 1)[0])

    def to_d(zz: np.ndarray) -> np.ndarray:
        return np.sqrt(2 - 2 * np.clip(0.5 + slope * (zz - z_cal), -1, 1))

    dg, di, dl = to_d(-gen), to_d(-imp), to_d(-loo[np.isfinite(loo)])
    return {"z_cal": z_cal, "slope_cos_per_z": slope,
            "rule": "distance_eq = sqrt(2 - 2*clip(0.5 + slope*(z - z_cal), -1, 1)); match when <= 1.0",
            "mapped_genuine_median": float(np.median(dg)),
            "mapped_genuine_p95": float(np.percentile(dg, 95)),
            "mapped_nearest_impostor_p5": float(np.percentile(di, 5)),
            "mapped_leave_own_out_p5": float(np.percentile(dl, 5)),
            "at_mapped_1.0": rates(dg, di, dl, ok, 1.0, strict=False)}


def clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items() if not isinstance(v, np.ndarray)}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) or math.isinf(x) else round(float(x), 4)
    if isinstance(x, np.integer):
        return int(x)
    return x


def f_pct(x: Any) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def report(out: dict[str, Any]) -> None:
    m, R = out["meta"], out["results"]
    print(f"\n== scoring study ({'SMALL' if m['small'] else 'full'} run; model {m['model_id']}; "
          f"enrolment <= {m['enrol_speech_cap_s']:g} s speech)")
    for name, d in m["datasets"].items():
        print(f"   {name:32} people {d['people']:3} tests {d['tests']:4} enrol speech "
              f"{d['enrol_speech_s_mean']:.1f} s, pieces/person {d['pieces_per_person']:.1f}, "
              f"files/person {d['files_per_person']:.1f}")
    c = m["cohort"]
    print(f"   impostors (never enrolled): {m['impostors']} (3 s crops: {m['impostors_crop3s']}); "
          f"cohort per fold: {c['embeddings_per_fold']} embeddings of {c['voices_per_fold']} voices")
    for cname in ("whole", "whole+words", "crop3s"):
        print(f"\n== pooled, test items: {cname}   (score: distance, or -z for AS-norm; "
              f"FAR imp = never-enrolled voices, FAR loo = leave-own-out)")
        print(f"{'method':22} {'top1':>6} {'EER':>6} | {'thr@FAR<=2%':>11} {'FARimp':>6} {'FARloo':>6} "
              f"{'FRR':>6} {'miss':>6} | {'2-fold: FARimp':>14} {'FARloo':>6} {'FRR':>6} | "
              f"{'@FRR5%: FARimp':>14} {'FARloo':>6}")
        for mname, conds in R.items():
            if cname not in conds:
                continue
            p = conds[cname]["pooled"]
            a2, cv, a5 = p["at_far2"], p["cv_at_far2"], p["at_frr5"]
            print(f"{mname:22} {f_pct(p['top1'])} {f_pct(p['eer'])} | {p['thr_far2']:11.3f} "
                  f"{f_pct(a2['far_imp'])} {f_pct(a2['far_loo'])} {f_pct(a2['frr'])} {f_pct(a2['miss'])} | "
                  f"{f_pct(cv['far_imp']):>14} {f_pct(cv['far_loo'])} {f_pct(cv['frr'])} | "
                  f"{f_pct(a5['far_imp']):>14} {f_pct(a5['far_loo'])}")
        for mname in ("centroid", "pieces_cent", "files_cent"):
            if cname in R.get(mname, {}) and "at_1.0" in R[mname][cname]["pooled"]:
                a1 = R[mname][cname]["pooled"]["at_1.0"]
                print(f"   {mname} at distance 1.0: FAR imp {f_pct(a1['far_imp'])} FAR loo "
                      f"{f_pct(a1['far_loo'])} FRR {f_pct(a1['frr'])} miss {f_pct(a1['miss'])}")
    for cname in ("whole", "whole+words"):
        names = list(next(iter(R.values()))[cname]["per_dataset"]) if cname in next(iter(R.values())) else []
        if not names:
            continue
        print(f"\n== per dataset ({cname}): top-1 / EER / FRR at the pooled FAR<=2% threshold "
              f"(own people only)")
        short = [n.split("_")[0][:10] for n in names]
        print(f"{'method':22} " + " ".join(f"{s:>20}" for s in short))
        for mname, conds in R.items():
            if cname not in conds:
                continue
            cells = []
            for n in names:
                v = conds[cname]["per_dataset"].get(n)
                cells.append("n/a" if v is None else
                             f"{f_pct(v['top1']).strip()}/{f_pct(v['eer']).strip()}/"
                             f"{f_pct(v['at_pooled_far2']['frr']).strip()}")
            print(f"{mname:22} " + " ".join(f"{c:>20}" for c in cells))
    if out["distance_map"]:
        print("\n== AS-norm mapped back to distance (z_cal -> 1.0; calibrated on this data)")
        for mname, v in out["distance_map"].items():
            a = v["at_mapped_1.0"]
            print(f"{mname:22} z_cal {v['z_cal']:.3f} slope {v['slope_cos_per_z']:.4f} cos/z; mapped "
                  f"genuine median {v['mapped_genuine_median']:.3f} p95 {v['mapped_genuine_p95']:.3f}, "
                  f"nearest impostor p5 {v['mapped_nearest_impostor_p5']:.3f}; at 1.0: FAR imp "
                  f"{f_pct(a['far_imp'])} loo {f_pct(a['far_loo'])} FRR {f_pct(a['frr'])}")


if __name__ == "__main__":
    sys.exit(main())
