"""Calibrate ``match.max_distance`` on your own labelled speech (``streamer calibrate``).

The folder holds ``DIR/SPEAKER/*.wav|flac|ogg|mp3`` (any sample rate). Each step works
without the CLI; ``streamer calibrate`` calls them in this order:

1. :func:`find_speakers`: the folder's audio files per speaker (raises
   :class:`CalibrationError`).
2. :func:`embed_files`: decode, VAD and embed every file with the configured VAD and a
   loaded :class:`~streamer.embedder.Embedder` (the only step that needs the model).
3. :func:`score` (pure): per speaker, enrol on the first files (sorted by name) until
   ``enrol_s`` of speech, a voiceprint = the speech-weighted unit mean of those
   embeddings (as the registry builds it); every other file is a genuine trial against
   its own voiceprint and an impostor trial against the others. Speakers with fewer
   than 2 usable files are only impostors (voices that were never enrolled).
4. :func:`recommend` (pure): the largest threshold whose open-set 1:N false-accept rate
   is within the target, a FAR/FRR table, the EER and warnings; :func:`format_report`
   and :func:`report_json` present it.
5. Optionally :func:`save_calibration_png` (a DET curve and score histograms; matplotlib
   is imported only there and :class:`PlotUnavailable` says how to install it) and
   :func:`write_max_distance` (edits only ``match.max_distance`` in a config file).

Distances are ``distance`` units: Euclidean between unit embeddings, accept ``<=``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml

from .audio import read_file
from .config import Config, config_from_mapping
from .errors import StreamerError
from .evaluation import det_curve, eer, far_frr, largest_threshold_at_far
from .phone_line import line_copies, line_voiceprint
from .segmenter import extract_speech
from .units import MODEL_SAMPLE_RATE

__all__ = [
    "AUDIO_SUFFIXES",
    "CalibrationError",
    "Item",
    "PlotUnavailable",
    "Recommendation",
    "Scores",
    "Speaker",
    "embed_files",
    "find_speakers",
    "format_report",
    "recommend",
    "report_json",
    "save_calibration_png",
    "save_det_png",
    "save_histograms_png",
    "score",
    "set_max_distance",
    "write_max_distance",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
INSTALL_HINT = "pip install -e '.[tools]'"


class CalibrationError(ValueError):
    """The folder or the data cannot be used (the CLI exits with code 2)."""


class PlotUnavailable(ImportError):
    """matplotlib is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Item:
    """One audio file: its speech seconds and unit embedding, or why it is unusable."""

    path: Path
    speaker: str
    speech_s: float
    vector: np.ndarray | None = None
    problem: str | None = None
    #: the file embedded as a room with a line variant of the model hears it
    #: (``match.channel``), when that differs from ``vector`` (how it is enrolled)
    trial_vector: np.ndarray | None = None
    #: the line voiceprint the file would make when enrolled, for a room that searches
    #: line voiceprints (:mod:`streamer.line_voiceprints`)
    line_vector: np.ndarray | None = None

    @property
    def heard(self) -> np.ndarray | None:
        """The vector to use when this file is a trial (a probe, not an enrolment)."""
        return self.vector if self.trial_vector is None else self.trial_vector

    @property
    def enrolled(self) -> np.ndarray | None:
        """The vector to use when this file is an enrolment."""
        return self.vector if self.line_vector is None else self.line_vector


@dataclass
class Speaker:
    """An enrolled speaker: enrolment files, their speech, and the held-out test files."""

    name: str
    enrol: list[Item]
    test: list[Item]

    @property
    def enrol_speech_s(self) -> float:
        return sum(i.speech_s for i in self.enrol)


@dataclass
class Scores:
    """Trial distances from :func:`score`.

    ``genuine``: each test file vs its own voiceprint. ``nearest_other``: each test file
    vs the nearest *other* enrolled voiceprint; ``never_enrolled``: each file of an
    impostor-only speaker vs the nearest voiceprint (together :attr:`open_set`, the 1:N
    false-accept trials). ``pairs``: every test or impostor-only file vs every voiceprint
    but its own (1:1 impostor trials).
    """

    genuine: np.ndarray
    nearest_other: np.ndarray
    never_enrolled: np.ndarray
    pairs: np.ndarray
    enrolled: list[Speaker]
    impostor_only: dict[str, int]
    skipped: list[Item] = field(default_factory=list)

    @property
    def open_set(self) -> np.ndarray:
        return np.concatenate([self.nearest_other, self.never_enrolled])


@dataclass
class Recommendation:
    """What :func:`recommend` found; rates are shares 0..1, thresholds ``distance``."""

    threshold: float
    target_far: float
    current: float
    far_1n: float
    far_1to1: float
    frr: float
    eer: float
    eer_threshold: float
    rows: list[dict[str, float]]
    warnings: list[str]
    #: Open-set impostor trials, and how many a FAR at ``target_far`` needs (1/target).
    impostor_trials: int = 0
    trials_needed: int = 0

    @property
    def reliable(self) -> bool:
        """False when too few impostor trials back the FAR: then the recommendation is
        only an upper bound taken from the nearest impostor seen, not a calibration."""
        return self.impostor_trials >= self.trials_needed


# -- data ----------------------------------------------------------------------------------


def find_speakers(folder: str | Path) -> dict[str, list[Path]]:
    """``{speaker: [audio files sorted by name]}`` for ``folder/SPEAKER/*.wav|flac|ogg|mp3``.

    Call first. Speakers come sorted by name; folders without audio files are left out.
    Raises :class:`CalibrationError` when ``folder`` is not a directory or holds no
    speaker folder with audio.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"{root} is not a directory (expected DIR/SPEAKER/*.wav|flac|ogg|mp3)")
    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if files:
            out[sub.name] = files
    if not out:
        raise CalibrationError(
            f"no speakers in {root}: expected one folder per speaker holding "
            f"{', '.join(AUDIO_SUFFIXES)} files"
        )
    return out


def embed_files(files: Mapping[str, Sequence[Path]], config: Config, embedder: Any,
                threads: int = 1, trial_embedder: Any = None,
                line_voiceprints: bool = False) -> dict[str, list[Item]]:
    """Decode, VAD (``config.vad``) and embed every file; ``{speaker: [Item, ...]}``.

    ``embedder`` must be loaded (:meth:`~streamer.embedder.Embedder.load`); with
    ``trial_embedder`` (a loaded line variant, :class:`~streamer.stream_embedder.
    StreamEmbedder` of ``match.channel``) each file is embedded by it too, as a room of
    that channel hears it (``Item.trial_vector``), and with ``line_voiceprints`` it also
    makes the line voiceprint a server would store for it (``Item.line_vector``:
    :func:`~streamer.phone_line.line_copies` embedded by ``trial_embedder``). A file that
    cannot be decoded, or has less speech than ``config.match.min_request_speech_s``
    (what ``identify`` refuses), becomes an :class:`Item` with ``problem`` set and no
    vector. ``threads`` files are processed at once. Raises nothing for bad files.
    """
    def one(speaker: str, path: Path) -> Item:
        try:
            speech = extract_speech(read_file(path), config.vad)
        except (StreamerError, OSError) as err:
            return Item(path, speaker, 0.0, problem=str(err))
        seconds = len(speech) / MODEL_SAMPLE_RATE
        if seconds < config.match.min_request_speech_s:
            return Item(path, speaker, seconds, problem=(
                f"only {seconds:.1f} s of speech (need {config.match.min_request_speech_s:g} s)"))
        trial = line = None
        if trial_embedder is not None:
            trial = np.asarray(trial_embedder.embed(speech), np.float64)
            if line_voiceprints:
                line = np.asarray(line_voiceprint(
                    [trial_embedder.embed(copy) for copy in line_copies(speech)]), np.float64)
        return Item(path, speaker, seconds, np.asarray(embedder.embed(speech), np.float64),
                    trial_vector=trial, line_vector=line)

    jobs = [(s, p) for s, paths in files.items() for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        items = list(pool.map(lambda job: one(*job), jobs))
    out: dict[str, list[Item]] = {s: [] for s in files}
    for item in items:
        out[item.speaker].append(item)
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v))


def score(items: Mapping[str, Sequence[Item]], enrol_s: float = 8.0) -> Scores:
    """Split each speaker into enrolment and test files and compute all trial distances.

    Pure (vectors in, distances out). Per speaker, usable files in the given order: the
    first ones until ``enrol_s`` seconds of speech (always leaving one for testing) make
    the voiceprint, ``unit(sum(speech_s * vector))`` of ``Item.enrolled`` (the line
    voiceprint when there is one); trials use ``Item.heard`` (a line variant's vector
    when there is one, as a room with that channel hears them). Speakers with fewer
    than 2 usable files are impostor-only. Raises :class:`CalibrationError` when no speaker can be
    enrolled, or there is no impostor trial (one speaker and no one else).
    """
    enrolled: list[Speaker] = []
    impostor_only: dict[str, list[Item]] = {}
    skipped: list[Item] = []
    for name, its in items.items():
        usable = [i for i in its if i.vector is not None]
        skipped += [i for i in its if i.vector is None]
        if len(usable) < 2:
            if usable:
                impostor_only[name] = usable
            continue
        n, total = 0, 0.0
        while n < len(usable) - 1 and total < enrol_s:
            total += usable[n].speech_s
            n += 1
        enrolled.append(Speaker(name, usable[:n], usable[n:]))
    if not enrolled:
        raise CalibrationError("no speaker has 2 usable files (one to enrol, one to test)")
    prints = np.array([_unit(np.sum([i.speech_s * np.asarray(i.enrolled) for i in s.enrol],
                                    axis=0)) for s in enrolled])

    def dist(v: np.ndarray) -> np.ndarray:
        return np.asarray(np.sqrt(np.clip(2.0 - 2.0 * prints @ v, 0.0, None)))

    genuine: list[float] = []
    nearest: list[float] = []
    never: list[float] = []
    pairs: list[float] = []
    for k, s in enumerate(enrolled):
        for item in s.test:
            d = dist(np.asarray(item.heard))
            genuine.append(d[k])
            others = np.delete(d, k)
            if others.size:
                nearest.append(others.min())
                pairs.extend(others)
    for its in impostor_only.values():
        for item in its:
            d = dist(np.asarray(item.heard))
            never.append(d.min())
            pairs.extend(d)
    if not nearest and not never:
        raise CalibrationError("no impostor trials: need a second speaker")
    return Scores(np.array(genuine), np.array(nearest), np.array(never), np.array(pairs),
                  enrolled, {k: len(v) for k, v in impostor_only.items()}, skipped)


# -- recommendation ------------------------------------------------------------------------


def recommend(scores: Scores, target_far: float = 0.01, current: float = 1.0,
              step: float = 0.01) -> Recommendation:
    """The largest ``step``-grid threshold with open-set 1:N FAR ``<= target_far``.

    Pure. Also a FAR/FRR table at the recommendation +-0.1 in 0.025 steps plus
    ``current``, the 1:1 EER and warnings about too little data. Raises ``ValueError``
    when ``target_far`` is not in (0, 1).
    """
    if not 0 < target_far < 1:
        raise ValueError(f"--target-far must be between 0 and 1, got {target_far!r}")
    open_set, g, pairs = scores.open_set, scores.genuine, scores.pairs
    warnings: list[str] = []
    t = largest_threshold_at_far(open_set, target_far, step)
    if t is None:
        t = step
        warnings.append(f"no threshold reaches a 1:N FAR of {100 * target_far:g}%: an impostor "
                        f"trial is at distance {open_set.min():.3f}; using {t:g}")
    rate, eer_t = eer(g, pairs)
    grid = {round(t + 0.025 * k, 3) for k in range(-4, 5)} | {round(current, 3)}
    rows = []
    for x in sorted(v for v in grid if 0 < v <= 2):
        far, frr = far_frr(g, open_set, x)
        rows.append({"threshold": x, "far_1n": far, "far_1to1": far_frr([], pairs, x)[0], "frr": frr})
    far_1n, frr = far_frr(g, open_set, t)
    n, need = open_set.size, math.ceil(1 / target_far)
    if n < need:
        warnings.append(
            f"only {n} open-set impostor trials, fewer than 1/target = {need}: one false "
            f"accept alone is {1 / n:.1%}, so the FAR estimate is not reliable. Need at "
            f"least {need} trials (about {math.ceil(3 / target_far)} to show FAR <= "
            f"{100 * target_far:g}% with 95% confidence when none is accepted): add "
            f"speakers or files")
    if len(scores.enrolled) < 5:
        warnings.append(f"only {len(scores.enrolled)} enrolled speakers: with more people "
                        f"enrolled, the nearest other person is nearer (FAR grows)")
    if g.size < 20:
        warnings.append(f"only {g.size} genuine trials: the FRR is rough")
    if not scores.impostor_only:
        warnings.append("no never-enrolled voices (speakers with a single file): add some")
    if frr > 0.2:
        warnings.append(f"at {t:g} {frr:.0%} of genuine files are rejected: enrol more "
                        f"speech, use longer test audio, or accept a higher FAR")
    return Recommendation(t, target_far, current, far_1n, far_frr([], pairs, t)[0], frr,
                          rate, eer_t, rows, warnings, impostor_trials=int(n),
                          trials_needed=need)


def format_report(scores: Scores, rec: Recommendation, enrol_s: float) -> str:
    """The text ``streamer calibrate`` prints (counts, table, EER, recommendation, warnings)."""
    en = scores.enrolled
    secs = [s.enrol_speech_s for s in en]
    files = [len(s.enrol) for s in en]
    lines = [
        (f"enrolled: {len(en)} speakers on {min(secs):.1f}-{max(secs):.1f} s of speech "
         f"(first {min(files)}-{max(files)} files; target {enrol_s:g} s), "
         f"{scores.genuine.size} test files"),
    ]
    short = [f"{s.name} ({s.enrol_speech_s:.1f} s)" for s in en if s.enrol_speech_s < enrol_s]
    if short:
        lines.append(f"  enrolled on less than {enrol_s:g} s: {', '.join(short)}")
    if scores.impostor_only:
        lines.append(f"impostor-only (fewer than 2 usable files, used as never-enrolled voices): "
                     f"{len(scores.impostor_only)} speakers: {', '.join(scores.impostor_only)}")
    for item in scores.skipped:
        lines.append(f"skipped {item.speaker}/{item.path.name}: {item.problem}")
    lines += [
        (f"trials: {scores.genuine.size} genuine; {scores.open_set.size} open-set 1:N "
         f"impostor ({scores.nearest_other.size} test files vs the nearest other person,"),
        (f"  {scores.never_enrolled.size} never-enrolled files vs the nearest person, nearest "
         f"at {scores.open_set.min():.4f}); {scores.pairs.size} 1:1 impostor pairs"),
        "",
        f"{'threshold':>9} {'FAR 1:N':>8} {'FAR 1:1':>8} {'FRR':>7}",
    ]
    for row in rec.rows:
        mark = []
        if math.isclose(row["threshold"], rec.threshold):
            mark.append("recommended")
        if math.isclose(row["threshold"], rec.current):
            mark.append("current")
        lines.append(f"{row['threshold']:9.3f} {row['far_1n']:8.1%} {row['far_1to1']:8.1%} "
                     f"{row['frr']:7.1%}" + (f"  <- {', '.join(mark)}" if mark else ""))
    lines += [
        "",
        f"EER (1:1): {rec.eer:.1%} at {rec.eer_threshold:.3f}",
        (f"recommended match.max_distance: {rec.threshold:.2f} (the largest with 1:N FAR <= "
         f"{100 * rec.target_far:g}%: FAR 1:N {rec.far_1n:.1%}, FAR 1:1 {rec.far_1to1:.1%}, "
         f"FRR {rec.frr:.1%}; current {rec.current:.2f})"),
    ]
    lines += [f"warning: {w}" for w in rec.warnings]
    return "\n".join(lines)


def report_json(scores: Scores, rec: Recommendation, **meta: Any) -> dict[str, Any]:
    """JSON-ready result: ``meta`` fields, the recommendation, speakers and all distances."""
    def r(xs: Iterable[float]) -> list[float]:
        return [round(float(x), 4) for x in xs]

    return {
        **meta,
        "recommended_max_distance": rec.threshold, "current_max_distance": rec.current,
        "target_far": rec.target_far, "far_1n": rec.far_1n, "far_1to1": rec.far_1to1,
        "frr": rec.frr, "eer": rec.eer, "eer_threshold": rec.eer_threshold,
        "table": rec.rows, "warnings": rec.warnings,
        "enrolled": {s.name: {"enrol_files": [i.path.name for i in s.enrol],
                              "enrol_speech_s": round(s.enrol_speech_s, 2),
                              "test_files": [i.path.name for i in s.test]} for s in scores.enrolled},
        "impostor_only": scores.impostor_only,
        "skipped": [{"file": str(i.path), "problem": i.problem} for i in scores.skipped],
        "distances": {"genuine": r(scores.genuine), "nearest_other": r(scores.nearest_other),
                      "never_enrolled": r(scores.never_enrolled), "pairs_1to1": r(scores.pairs)},
    }


# -- plots (matplotlib, imported only here) ------------------------------------------------

_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8]
_FLOOR = 0.0005


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(f"matplotlib is not installed; for plots: {INSTALL_HINT}") from None
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _probit(p: np.ndarray | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _FLOOR, 1 - _FLOOR)
    return np.asarray(np.vectorize(NormalDist().inv_cdf)(q), dtype=np.float64)


def _draw_det(ax: Any, curves: Mapping[str, tuple[Any, Any]],
              marks: Mapping[str, float]) -> None:
    for label, (g, imp) in curves.items():
        _, far, frr = det_curve(g, imp)
        ax.step(_probit(far), _probit(frr), where="post", label=label)
    label, (g, imp) = next(iter(curves.items()))
    for j, (name, t) in enumerate(marks.items()):
        f, r = far_frr(g, imp, t)
        ax.plot(_probit(f), _probit(r), "os^D"[j % 4], ms=9, mfc="none", mew=2,
                color="black", label=f"{name} {t:g} (on {label})")
    ticks = _probit(np.array(_TICKS))
    labels = [f"{100 * v:g}" for v in _TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    lim = (float(_probit(_FLOOR)) - 0.1, float(_probit(0.85)))
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("false accepts (%)")
    ax.set_ylabel("false rejects (%)")
    ax.set_title("DET (probit axes; 0 % drawn at the edge)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _draw_hist(ax: Any, genuine: Any, impostor: Any,
               marks: Mapping[str, float], title: str, impostor_label: str = "impostor") -> None:
    bins = np.linspace(0.0, 1.6, 65)
    ax.hist(np.clip(genuine, 0, 1.6), bins, alpha=0.6, density=True, color="C2",
            label=f"genuine (n={len(genuine)})")
    ax.hist(np.clip(impostor, 0, 1.6), bins, alpha=0.6, density=True, color="C3",
            label=f"{impostor_label} (n={len(impostor)})")
    for j, (name, t) in enumerate(marks.items()):
        ax.axvline(t, color=f"C{j + 4}", ls="--", label=f"{name} {t:g}")
    ax.set_xlabel("distance (Euclidean, unit embeddings)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def save_calibration_png(path: str | Path, scores: Scores, marks: Mapping[str, float]) -> Path:
    """One PNG: DET curves (1:N open set and 1:1) and genuine vs impostor histograms.

    ``marks``: ``{"current": 1.0, "recommended": 0.97}`` thresholds to mark. Raises
    :class:`PlotUnavailable` without matplotlib, ``OSError`` if the file cannot be written.
    """
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.5))
    try:
        _draw_det(a, {"1:N open set": (scores.genuine, scores.open_set),
                      "1:1 pairs": (scores.genuine, scores.pairs)}, marks)
        _draw_hist(b, scores.genuine, scores.open_set, marks, "distances",
                   "impostor, nearest other person")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def save_det_png(path: str | Path, curves: Mapping[str, tuple[Any, Any]],
                 marks: Mapping[str, float]) -> Path:
    """A DET PNG of ``{label: (genuine, impostor)}`` curves, ``marks`` on the first one.

    Raises :class:`PlotUnavailable` without matplotlib, ``ValueError`` for an empty list.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    try:
        _draw_det(ax, curves, marks)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def save_histograms_png(path: str | Path,
                        panels: Mapping[str, tuple[Any, Any]],
                        marks: Mapping[str, float]) -> Path:
    """Genuine vs impostor histograms, one panel per ``{title: (genuine, impostor)}``.

    Raises :class:`PlotUnavailable` without matplotlib.
    """
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    try:
        for ax, (title, (g, imp)) in zip(axes.flat, panels.items()):
            _draw_hist(ax, g, imp, marks, title)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return Path(path)


# -- config editing ------------------------------------------------------------------------

_SECTION = re.compile(r"^match\s*:\s*(#.*)?$")
_KEY = re.compile(r"^(?P<indent>[ \t]+)max_distance(?P<colon>\s*:\s*)(?P<value>[^#\n]*?)"
                  r"(?P<gap>\s*)(?P<comment>#.*)?$")


def set_max_distance(text: str, value: float) -> tuple[str, str | None]:
    """Return ``(new_text, old_value)`` with ``match.max_distance`` set to ``value``.

    Pure. Only that line changes (indentation and its comment kept, the comment's column
    too when there is room); the key is added under ``match:`` when missing, and the
    section at the end when it is missing (``old_value`` None then). Raises ``ValueError``
    for a ``match`` section in flow style (``match: {...}``) or a result that is not a
    valid configuration.
    """
    new = repr(round(float(value), 4))
    lines = text.splitlines(keepends=True)
    start = next((k for k, line in enumerate(lines) if _SECTION.match(line.rstrip("\r\n"))), None)
    old: str | None = None
    if start is None:
        if any(re.match(r"^match\s*:", line) for line in lines):
            raise ValueError("the match section is not in block style; set max_distance by hand")
        sep = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        out = text + sep + f"match:\n  max_distance: {new}\n"
    else:
        end = start + 1
        while end < len(lines) and (lines[end][:1] in (" ", "\t", "#", "\n", "\r")):
            end += 1
        indent = ""
        for k in range(start + 1, end):
            line = lines[k].rstrip("\r\n")
            if not indent and line.strip() and not line.lstrip().startswith("#"):
                indent = line[: len(line) - len(line.lstrip())]
            m = _KEY.match(line)
            if m:
                old = m["value"].strip()
                width = len(m["value"]) + len(m["gap"])
                gap = " " * max(1, width - len(new)) if m["comment"] else ""
                lines[k] = (f"{m['indent']}max_distance{m['colon']}{new}{gap}"
                            f"{m['comment'] or ''}{lines[k][len(line):]}")
                break
        if old is None:
            lines.insert(start + 1, f"{indent or '  '}max_distance: {new}\n")
        out = "".join(lines)
    raw = yaml.safe_load(out)
    got = config_from_mapping(raw).match.max_distance  # raises ConfigError (a StreamerError)
    if not math.isclose(got, float(new)):
        raise ValueError(f"editing the config gave match.max_distance {got!r}, not {new}")
    return out, old


def write_max_distance(path: str | Path, value: float) -> str:
    """Set ``match.max_distance`` in the config file ``path`` (created if missing).

    Returns a sentence saying what changed. Raises ``OSError`` when the file cannot be
    read or written, ``ValueError`` / :class:`~streamer.errors.ConfigError` as
    :func:`set_max_distance`.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8") if p.exists() else ""
    out, old = set_max_distance(text, value)
    p.write_text(out, encoding="utf-8")
    if old is None:
        return f"{p}: added match.max_distance: {round(float(value), 4)!r}"
    return f"{p}: match.max_distance {old} -> {round(float(value), 4)!r}"
