"""A two-covariance (PLDA-style) model of voiceprints: fit it to real embeddings, draw
distinct synthetic people and their utterances from it, and check it against the real
data before trusting it (``bench/gallery.py --people N``).

Model (on the unit embeddings the registry stores)::

    utterance x = mu + y + e,   y ~ N(0, B) per speaker,   e ~ N(0, W) per utterance

then normalised to unit length (as the embedder's output is). ``mu`` is the mean of the
speaker means (each speaker weighted once), ``W`` the pooled within-speaker covariance
of speakers with two or more utterances, ``B`` the covariance of the speaker means minus
the part of ``W`` that leaks into a mean of ``n`` utterances (``mean(1/n) * W``), with
negative eigenvalues clipped. Both are shrunk towards a scaled identity with the
Ledoit-Wolf coefficient, because a few hundred speakers cannot pin down a 192 x 192
covariance: without shrinkage ``B`` would be rank-deficient (no synthetic person could
differ from the real ones in the directions the sample does not span) and its large
eigenvalues inflated.

A synthetic *person* is ``mu + y``; their *enrolled vector* is the unit mean of
``enrol_utterances`` unit utterances (the registry keeps the centroid of a person's
voiceprints); a *genuine query* is one more utterance of them; an *impostor* is an
utterance of a person who is never enrolled.

:func:`validate` compares real and synthetic data at equal gallery size: leave one
speaker out, every utterance of that speaker against the centroids of all the others
(its nearest-impostor distance), for the real speakers and for synthetic speakers with
the same numbers of utterances, and real utterances against a synthetic gallery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out: np.ndarray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def ledoit_wolf(x: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage coefficient (towards ``trace/d * I``) of the covariance of the
    rows of ``x``, which must already be centred."""
    n, d = x.shape
    s = x.T @ x / n
    m = float(np.trace(s)) / d
    delta2 = float(np.sum((s - m * np.eye(d)) ** 2))
    norms2 = np.einsum("ij,ij->i", x, x)
    beta2 = (float(np.sum(norms2 ** 2)) - n * float(np.sum(s ** 2))) / n ** 2
    beta2 = min(max(beta2, 0.0), delta2)
    return beta2 / delta2 if delta2 > 0 else 1.0


def shrink(cov: np.ndarray, lam: float) -> np.ndarray:
    d = cov.shape[0]
    out: np.ndarray = (1.0 - lam) * cov + lam * float(np.trace(cov)) / d * np.eye(d)
    return out


def sqrt_psd(cov: np.ndarray) -> np.ndarray:
    """``R`` with ``R.T @ R == cov``: ``z @ R`` has covariance ``cov`` for white ``z``."""
    w, q = np.linalg.eigh(cov)
    root: np.ndarray = (q * np.sqrt(np.maximum(w, 0.0))).T
    return root


@dataclass
class TwoCovariance:
    mean: np.ndarray
    between: np.ndarray
    within: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    #: Per-speaker within-speaker variance multipliers (trace of the speaker's own
    #: within covariance over the pooled one), drawn for each synthetic person: real
    #: speakers differ in how much their utterances vary (1 s words vs 10 s of reading).
    scales: np.ndarray = field(default_factory=lambda: np.ones(1))

    def __post_init__(self) -> None:
        self._rb = sqrt_psd(self.between)
        self._rw = sqrt_psd(self.within)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def people(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` people: speaker means ``mu + y`` (not unit, float32) and the standard
        deviation multiplier of each one's within-speaker noise."""
        z = rng.standard_normal((n, self.dim))
        means: np.ndarray = (self.mean + z @ self._rb).astype(np.float32)
        sd: np.ndarray = np.sqrt(rng.choice(self.scales, n)).astype(np.float32)
        return means, sd

    def utterances(self, means: np.ndarray, sd: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
        """One unit utterance per row of ``means`` (``sd``: each row's noise multiplier)."""
        z = rng.standard_normal(means.shape)
        return unit(means + (z @ self._rw) * np.asarray(sd)[:, None])

    def enrolled(self, means: np.ndarray, sd: np.ndarray, n_utt: int,
                 rng: np.random.Generator) -> np.ndarray:
        """The registry's vector of each person: unit mean of ``n_utt`` unit utterances."""
        acc = np.zeros(means.shape, dtype=np.float64)
        for _ in range(n_utt):
            acc += self.utterances(means, sd, rng)
        return unit(acc)


#: Shrinkage of the between-speaker covariance. The Ledoit-Wolf coefficient (about 0.4
#: here) spreads B's spectrum over all 192 dimensions, which makes distances between
#: synthetic people concentrate and their nearest impostors too far compared with the
#: real data (validate(): share of nearest impostors within 1.0 at N = 181, 0 % against
#: 2.0 % real); the smallest shrinkage that still fills B's null space (90 of 192
#: eigenvalues are 0 with 182 speakers) is the closest to the real tail, so it is used.
SHRINK_BETWEEN = 0.02


def merge_duplicates(vectors: np.ndarray, speakers: np.ndarray,
                     max_distance: float) -> tuple[np.ndarray, list[tuple[str, str, float]]]:
    """Relabel speakers whose centroids are closer than ``max_distance`` (the median
    distance between two utterances of one speaker) as one: Common Voice ids are per
    browser, and one person may have several. Returns new labels and the merged pairs."""
    labels = np.asarray(speakers).copy()
    uniq = list(dict.fromkeys(labels.tolist()))
    cent = unit(np.stack([vectors[labels == s].astype(np.float64).mean(axis=0) for s in uniq]))
    d = _dist(cent, cent)
    merged = []
    for i, j in zip(*np.nonzero(np.triu(d < max_distance, 1))):
        a, b = uniq[i], uniq[j]
        labels[labels == b] = a
        merged.append((a, b, round(float(d[i, j]), 4)))
    return labels, merged


def fit(vectors: np.ndarray, speakers: np.ndarray,
        shrink_between: float | None = SHRINK_BETWEEN) -> TwoCovariance:
    """Fit the model to unit utterance embeddings labelled by speaker; ``W`` is shrunk
    with the Ledoit-Wolf coefficient, ``B`` with ``shrink_between`` (None: Ledoit-Wolf)."""
    x = np.asarray(vectors, dtype=np.float64)
    labels = list(dict.fromkeys(np.asarray(speakers).tolist()))
    means, counts, resid = [], [], []
    for s in labels:
        v = x[np.asarray(speakers) == s]
        means.append(v.mean(axis=0))
        counts.append(len(v))
        if len(v) >= 2:  # unbiased: scale so that E[r r'] = W
            resid.append((v - v.mean(axis=0)) * math.sqrt(len(v) / (len(v) - 1)))
    m = np.stack(means)
    n = np.asarray(counts, dtype=np.float64)
    mu = m.mean(axis=0)
    r = np.concatenate(resid)
    w_raw = r.T @ r / len(r)
    scales = np.array([float(np.sum(x_ ** 2)) / len(x_) / float(np.trace(w_raw))
                       for x_ in resid])
    lam_w = ledoit_wolf(r)
    mc = m - mu
    s_means = mc.T @ mc / (len(m) - 1)
    b_raw = s_means - float(np.mean(1.0 / n)) * w_raw
    ev, q = np.linalg.eigh(b_raw)
    clipped = int(np.sum(ev < 0))
    b_raw = (q * np.maximum(ev, 0.0)) @ q.T
    lam_b_lw = ledoit_wolf(mc)
    lam_b = lam_b_lw if shrink_between is None else shrink_between
    within = shrink(w_raw, lam_w)
    between = shrink(b_raw, lam_b)
    info = {"speakers": len(labels), "utterances": int(n.sum()),
            "speakers_with_2_or_more": len(resid),
            "shrinkage_between": round(lam_b, 4),
            "shrinkage_between_ledoit_wolf": round(lam_b_lw, 4),
            "shrinkage_within": round(lam_w, 4),
            "within_scale_p10_p50_p90": [round(float(np.percentile(scales, q)), 3)
                                         for q in (10, 50, 90)],
            "between_eigenvalues_clipped": clipped,
            "trace_between": round(float(np.trace(between)), 4),
            "trace_within": round(float(np.trace(within)), 4),
            "norm_mean": round(float(np.linalg.norm(mu)), 4)}
    return TwoCovariance(mu, between, within, info, scales)


# -- validation ---------------------------------------------------------------------------


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between the unit rows of ``a`` and ``b`` (float64)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    l2 = (np.einsum("ij,ij->i", a64, a64)[:, None] + np.einsum("ij,ij->i", b64, b64)[None, :]
          - 2.0 * a64 @ b64.T)
    out: np.ndarray = np.sqrt(np.maximum(l2, 0.0))
    return out


def loso(utts: np.ndarray, spk: np.ndarray, gallery_size: int | None = None,
         rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leave one speaker out: for every utterance, the distance to the nearest centroid of
    another speaker (all of them, or ``gallery_size`` drawn at random), and for speakers
    with two or more utterances the distance of each to the centroid of their others."""
    labels = np.asarray(spk)
    uniq = list(dict.fromkeys(labels.tolist()))
    idx = {s: i for i, s in enumerate(uniq)}
    cent = unit(np.stack([utts[labels == s].astype(np.float64).mean(axis=0) for s in uniq]))
    own = np.array([idx[s] for s in labels.tolist()])
    d = _dist(utts, cent)
    d[np.arange(len(utts)), own] = np.inf
    if gallery_size is not None and gallery_size < len(uniq) - 1:
        assert rng is not None
        keep = np.zeros_like(d, dtype=bool)
        for i in range(len(utts)):
            others = np.flatnonzero(np.arange(len(uniq)) != own[i])
            keep[i, rng.choice(others, gallery_size, replace=False)] = True
        d = np.where(keep, d, np.inf)
    nearest = d.min(axis=1)
    genuine = []
    for s in uniq:
        v = utts[labels == s].astype(np.float64)
        if len(v) < 2:
            continue
        tot = v.sum(axis=0)
        for j in range(len(v)):
            c = unit((tot - v[j])[None, :])
            genuine.append(float(np.linalg.norm(v[j] - c[0])))
    return nearest, np.asarray(genuine)


def tail(x: np.ndarray) -> dict[str, float | int]:
    """The distribution of nearest-impostor distances: low tail (the closest impostors,
    where false accepts come from), median and high tail; and its share under 0.9 / 1.0."""
    x = np.asarray(x, dtype=np.float64)
    q = {f"p{p:g}": round(float(np.percentile(x, p)), 4) for p in (0.1, 1, 5, 50, 99, 99.9)}
    return {"n": int(x.size), **q, "share_le_0.9": round(float(np.mean(x <= 0.9)), 4),
            "share_le_1.0": round(float(np.mean(x <= 1.0)), 4)}


def validate(model: TwoCovariance, utts: np.ndarray, spk: np.ndarray,
             rng: np.random.Generator, replicas: int = 20) -> dict[str, Any]:
    """Real against synthetic at equal gallery size N = speakers - 1 (and smaller N).

    ``real``: leave-one-speaker-out nearest-impostor distances of the real utterances;
    ``synthetic``: the same for ``replicas`` synthetic populations with the real speakers'
    utterance counts; ``real_vs_synthetic``: every real utterance against the centroids
    of a synthetic population of N people (what real impostor queries meet in the
    benchmark's gallery). ``genuine``: utterance to the centroid of its speaker's other
    utterances.
    """
    labels = np.asarray(spk)
    uniq = list(dict.fromkeys(labels.tolist()))
    counts = np.array([int(np.sum(labels == s)) for s in uniq])
    n_gallery = len(uniq) - 1
    real_near, real_gen = loso(utts, labels)
    syn_near, syn_gen, cross = [], [], []
    curves: dict[int, dict[str, list[float]]] = {}
    sizes = [s for s in (10, 30, 100) if s < n_gallery] + [n_gallery]
    for r in range(replicas):
        means, sd = model.people(len(uniq), rng)
        rows = np.repeat(np.arange(len(uniq)), counts)
        s_utts = model.utterances(means[rows], sd[rows], rng)
        near, gen = loso(s_utts, rows)
        syn_near.append(near)
        syn_gen.append(gen)
        # real utterances against a synthetic gallery of n_gallery people, each enrolled
        # with the mean real utterance count
        g_means, g_sd = model.people(n_gallery, rng)
        g = model.enrolled(g_means, g_sd, max(1, int(round(float(np.mean(counts))))), rng)
        cross.append(_dist(utts, g).min(axis=1))
        if r < 5:
            for size in sizes[:-1]:
                c = curves.setdefault(size, {"real": [], "synthetic": []})
                c["real"] += loso(utts, labels, size, rng)[0].tolist()
                c["synthetic"] += loso(s_utts, rows, size, rng)[0].tolist()
    curves.setdefault(n_gallery, {"real": real_near.tolist(),
                                  "synthetic": np.concatenate(syn_near).tolist()})
    syn_near_all = np.concatenate(syn_near)
    return {
        "gallery_size": n_gallery, "speakers": len(uniq), "utterances": len(utts),
        "replicas": replicas,
        "nearest_impostor": {"real": tail(real_near), "synthetic": tail(syn_near_all),
                             "real_vs_synthetic": tail(np.concatenate(cross))},
        "genuine": {"real": tail(real_gen), "synthetic": tail(np.concatenate(syn_gen))},
        "by_gallery_size": {str(size): {k: {"p1": round(float(np.percentile(v, 1)), 4),
                                            "p50": round(float(np.percentile(v, 50)), 4)}
                                        for k, v in c.items()}
                            for size, c in sorted(curves.items())},
        "_samples": {"real": real_near, "synthetic": syn_near_all,
                     "real_vs_synthetic": np.concatenate(cross), "genuine_real": real_gen,
                     "genuine_synthetic": np.concatenate(syn_gen)},
    }
