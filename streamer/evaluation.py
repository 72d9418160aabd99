"""Measurement helpers for the accuracy benchmark (``bench/accuracy.py``) and its tests.

Pure where possible; needs only numpy, soundfile and the standard library (no model,
no VAD: callers pass those in). Units:

* ``distance``: Euclidean distance between unit embeddings (the protocol's unit, 0..2);
  *lower* means *more alike*. A trial is accepted when ``distance <= threshold``,
  exactly as :func:`streamer.identify.decide` accepts a match.
* times are seconds of stream (or file) time.

What is here:

* :func:`load_manifest`, :func:`enrol_test_split`: the ``shared/speech`` datasets.
* :func:`speaker_halves`, :func:`half_of`: the tuning / test split by speaker.
* :func:`eer`, :func:`far_frr`: verification error rates from distance lists.
* :func:`det_curve`: FAR and FRR at every observed distance (DET plots).
* :func:`largest_threshold_at_far`: the loosest threshold that keeps FAR within a target.
* :func:`read_rttm`, :func:`solo_spans`: reference speaker turns.
* :func:`score_meeting`: live ``speaker`` events against reference turns.
* :func:`stitch`: a conversation built from single-speaker utterances.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

__all__ = [
    "MeetingScore",
    "Turn",
    "Utterance",
    "det_curve",
    "eer",
    "enrol_test_split",
    "far_frr",
    "half_of",
    "largest_threshold_at_far",
    "load_manifest",
    "read_audio",
    "read_rttm",
    "score_meeting",
    "solo_spans",
    "speaker_halves",
    "speaker_of",
    "stitch",
]

#: The two halves of ``shared/speech``: thresholds, windows and limits are chosen on
#: ``"tune"``; the README reports ``"test"``.
HALVES = ("tune", "test")

#: Sample rate of every file in ``shared/speech`` and of the model input (Hz).
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Utterance:
    """One audio file of one speaker: absolute ``path``, ``speaker`` label, ``seconds``.

    ``listed`` is the manifest's own speaker column when :func:`load_manifest` corrected
    it (see :func:`speaker_of`); empty when the manifest's label is the speaker.
    """

    path: Path
    speaker: str
    seconds: float
    listed: str = ""


@dataclass(frozen=True)
class Turn:
    """A stretch of one speaker's speech, ``start`` .. ``end`` seconds."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        """Length of the turn in seconds."""
        return self.end - self.start


# -- datasets ------------------------------------------------------------------------------


#: A Speech Commands file name: ``[unknown_]<word>_<speaker hash>_nohash_<n>``.
_SPEECH_COMMANDS_NAME = re.compile(
    r"(?:unknown_)?[a-z]+_(?P<hash>[0-9a-f]{8})_nohash_\d+(?:\.wav)?\.flac")


def speaker_of(path: Path, listed: str) -> str:
    """The speaker of one manifest row: ``listed`` (the manifest's column) unless the
    file name says otherwise.

    Speech Commands names its speaker by the hash in each file name (its ``SOURCE.md``:
    "Speaker id = the hash in the file name"). The manifest of
    ``speechcommands_v002test_80spk`` files the corpus's ``unknown_`` clips under the
    *word* (``sc_five`` holds "five" said by eight different people), so for every
    Speech Commands file name the hash decides: ``sc_<hash>``.
    """
    m = _SPEECH_COMMANDS_NAME.fullmatch(path.name)
    return f"sc_{m.group('hash')}" if m and listed.startswith("sc_") else listed


def load_manifest(dataset_dir: str | Path) -> list[Utterance]:
    """Read ``dataset_dir/MANIFEST.tsv`` (columns ``path``, ``speaker``, ``seconds``).

    Returns the rows in file order with ``path`` made absolute and each row's speaker
    from :func:`speaker_of` (a corrected row keeps the manifest's label in ``listed``).
    Rows whose speaker column lists several speakers (whole recordings, ``A,B``) are
    kept as they are; filter them out when you need single-speaker files.
    """
    root = Path(dataset_dir)
    with (root / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        out = []
        for r in csv.DictReader(f, delimiter="\t"):
            path, listed = root / r["path"], r["speaker"]
            speaker = speaker_of(path, listed)
            out.append(Utterance(path, speaker, float(r["seconds"]),
                                 listed if speaker != listed else ""))
        return out


def enrol_test_split(
    utterances: Sequence[Utterance], enrol_s: float = 8.0
) -> tuple[dict[str, list[Utterance]], dict[str, list[Utterance]]]:
    """Split each speaker's utterances into enrolment and test, in manifest order.

    A speaker's first utterances are taken for enrolment until their ``seconds`` add up
    to at least ``enrol_s`` (callers may truncate the joined enrolment speech to
    ``enrol_s``); the remaining utterances are for testing. A speaker is left out of
    both results when that leaves no test utterance, or when all their audio is shorter
    than ``enrol_s``. Returns ``(enrol, test)``, each ``{speaker: [Utterance, ...]}``
    with speakers in order of first appearance.
    """
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, []).append(u)
    enrol: dict[str, list[Utterance]] = {}
    test: dict[str, list[Utterance]] = {}
    for speaker, utts in by_speaker.items():
        total = 0.0
        n = 0
        while n < len(utts) and total < enrol_s:
            total += utts[n].seconds
            n += 1
        if total < enrol_s or n >= len(utts):
            continue
        enrol[speaker] = list(utts[:n])
        test[speaker] = list(utts[n:])
    return enrol, test


def _speaker_key(speaker: str) -> str:
    return hashlib.sha256(speaker.encode("utf-8")).hexdigest()


def speaker_halves(speakers: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split one dataset's speakers into a tuning half and a test half.

    Call once per dataset with all its speaker labels. The speakers are ordered by the
    SHA-256 of their label (not by manifest order or name, so neither the corpus's
    ordering nor its naming decides) and dealt alternately, first to ``tune``: the
    halves differ by at most one speaker, and a dataset of two speakers gives one to
    each. Deterministic. Returns ``(tune, test)``, each sorted by that key.
    """
    ordered = sorted(set(speakers), key=_speaker_key)
    return ordered[0::2], ordered[1::2]


def half_of(utterances: Sequence[Utterance], half: str) -> list[Utterance]:
    """The utterances (of one dataset) whose speaker is in ``half`` (``"tune"`` or
    ``"test"``, see :func:`speaker_halves`), in their original order; ``"all"`` keeps
    every utterance. Multi-speaker rows (``A,B``) are in a half only when every one of
    their speakers is. Raises ``ValueError`` for another half name.

    The halves are dealt over the manifest's own labels (``listed`` where
    :func:`load_manifest` corrected one), so a correction moves nobody between halves:
    a corrected row is in the half of its true speaker's own label, and in neither
    half when its speaker has no label of their own in the manifest.
    """
    if half == "all":
        return list(utterances)
    if half not in HALVES:
        raise ValueError(f"half must be 'tune', 'test' or 'all', got {half!r}")
    singles = {s for u in utterances for s in (u.listed or u.speaker).split(",")}
    chosen = set(speaker_halves(singles)[HALVES.index(half)])
    return [u for u in utterances if all(s in chosen for s in u.speaker.split(","))]


def read_audio(path: str | Path) -> np.ndarray:
    """Read a 16 kHz audio file as float32 mono in [-1, 1] (channels averaged).

    Raises ``ValueError`` for another sample rate.
    """
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    return np.ascontiguousarray(samples.mean(axis=1), dtype=np.float32)


# -- verification error rates --------------------------------------------------------------


def far_frr(
    genuine: Iterable[float], impostor: Iterable[float], threshold: float
) -> tuple[float, float]:
    """Return ``(far, frr)`` at ``threshold`` (``distance``), as shares 0..1.

    A trial is accepted when its distance is ``<= threshold``. FAR is the share of
    impostor distances accepted, FRR the share of genuine distances rejected
    (``> threshold``). An empty list gives NaN for its rate.
    """
    g = np.asarray(list(genuine), dtype=np.float64)
    i = np.asarray(list(impostor), dtype=np.float64)
    far = float(np.mean(i <= threshold)) if i.size else math.nan
    frr = float(np.mean(g > threshold)) if g.size else math.nan
    return far, frr


def eer(genuine: Iterable[float], impostor: Iterable[float]) -> tuple[float, float]:
    """Return ``(eer, threshold)``: the equal error rate and the distance where it occurs.

    Every observed distance is tried as a threshold (accept ``<= threshold``); the one
    where FAR and FRR are closest is chosen (the smallest such distance on a tie) and
    the EER is the mean of FAR and FRR there. When the lists are separated (FAR = FRR = 0
    is reachable) the threshold returned is the midpoint of the gap between the largest
    genuine and the smallest impostor distance. Raises ``ValueError`` if either list is
    empty.
    """
    g = np.sort(np.asarray(list(genuine), dtype=np.float64))
    i = np.sort(np.asarray(list(impostor), dtype=np.float64))
    if g.size == 0 or i.size == 0:
        raise ValueError("eer needs at least one genuine and one impostor distance")
    if g[-1] < i[0]:
        return 0.0, float((g[-1] + i[0]) / 2)
    candidates = np.unique(np.concatenate([g, i]))
    far = np.searchsorted(i, candidates, side="right") / i.size  # share of impostors <= t
    frr = 1.0 - np.searchsorted(g, candidates, side="right") / g.size  # share of genuine > t
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2), float(candidates[k])


def det_curve(
    genuine: Iterable[float], impostor: Iterable[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(thresholds, far, frr)``: the error rates at every observed distance.

    ``thresholds`` are the distinct genuine and impostor distances, ascending; ``far[k]``
    and ``frr[k]`` are what :func:`far_frr` gives at ``thresholds[k]`` (accept
    ``<= threshold``). Use it for DET plots: FAR rises and FRR falls along the arrays.
    Raises ``ValueError`` if either list is empty.
    """
    g = np.sort(np.asarray(list(genuine), dtype=np.float64))
    i = np.sort(np.asarray(list(impostor), dtype=np.float64))
    if g.size == 0 or i.size == 0:
        raise ValueError("det_curve needs at least one genuine and one impostor distance")
    t = np.unique(np.concatenate([g, i]))
    far = np.searchsorted(i, t, side="right") / i.size
    frr = 1.0 - np.searchsorted(g, t, side="right") / g.size
    return t, far, frr


def largest_threshold_at_far(
    impostor: Iterable[float], target_far: float, step: float = 0.01, upper: float = 2.0
) -> float | None:
    """The largest threshold on a ``step`` grid whose FAR on ``impostor`` is ``<= target_far``.

    FAR is :func:`far_frr`'s (share of impostor distances ``<= threshold``). With ``n``
    impostor distances, ``floor(target_far * n)`` of them may be accepted, so the answer
    is the largest multiple of ``step`` strictly below the next-smallest impostor distance
    (``upper``, rounded down to the grid, when all may be accepted). Returns None when no
    positive grid threshold qualifies (an impostor distance at or below ``step``). Raises
    ``ValueError`` for an empty list, ``target_far`` outside [0, 1] or ``step <= 0``.
    """
    x = np.sort(np.asarray(list(impostor), dtype=np.float64))
    if x.size == 0:
        raise ValueError("largest_threshold_at_far needs at least one impostor distance")
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target_far must be in [0, 1], got {target_far!r}")
    if not step > 0:
        raise ValueError(f"step must be > 0 (distance), got {step!r}")
    allowed = math.floor(target_far * x.size + 1e-9)
    if allowed >= x.size:
        cells = math.floor(upper / step + 1e-9)
    else:
        cells = math.ceil(x[allowed] / step - 1e-9) - 1  # strictly below that distance
    if cells < 1:
        return None
    return round(cells * step, 10)


# -- reference turns -----------------------------------------------------------------------


def read_rttm(path: str | Path) -> list[Turn]:
    """Read the ``SPEAKER`` lines of an RTTM file as turns, sorted by start.

    RTTM: ``SPEAKER file channel start duration <NA> <NA> speaker <NA> <NA>``. Other line
    types and blank lines are ignored. Raises ``ValueError`` for a malformed line.
    """
    turns = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] != "SPEAKER":
            continue
        if len(parts) < 8:
            raise ValueError(f"{path}:{number}: RTTM SPEAKER line needs 8+ fields")
        start, duration = float(parts[3]), float(parts[4])
        turns.append(Turn(start, start + duration, parts[7]))
    return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))


def _grid(n: int, step_s: float) -> np.ndarray:
    """Centres of ``n`` grid cells of ``step_s`` seconds."""
    return (np.arange(n) + 0.5) * step_s


def _activity(turns: Sequence[Turn], n: int, step_s: float) -> dict[str, np.ndarray]:
    """Boolean activity per speaker on the grid (a cell counts if its centre is inside)."""
    centres = _grid(n, step_s)
    active: dict[str, np.ndarray] = {}
    for t in turns:
        mask = active.setdefault(t.speaker, np.zeros(n, dtype=bool))
        mask |= (centres >= t.start) & (centres < t.end)
    return active


def solo_spans(
    turns: Sequence[Turn], min_s: float = 1.0, step_s: float = 0.01
) -> dict[str, list[tuple[float, float]]]:
    """Stretches where exactly one speaker talks, at least ``min_s`` long.

    Returns ``{speaker: [(start, end), ...]}`` in seconds, on a ``step_s`` grid.
    """
    if not turns:
        return {}
    n = int(math.ceil(max(t.end for t in turns) / step_s))
    active = _activity(turns, n, step_s)
    count = np.sum(list(active.values()), axis=0)
    out: dict[str, list[tuple[float, float]]] = {}
    for speaker, mask in active.items():
        solo = np.concatenate([[False], mask & (count == 1), [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(solo))
        spans = [(a * step_s, b * step_s) for a, b in zip(edges[::2], edges[1::2])
                 if (b - a) * step_s >= min_s - 1e-9]
        if spans:
            out[speaker] = spans
    return out


# -- live events vs reference --------------------------------------------------------------


@dataclass
class MeetingScore:
    """How well live ``speaker`` events match the reference turns of one recording.

    Shares are of scored time (see :func:`score_meeting`); NaN when there was none.
    """

    #: Enrolled speakers' scored speech time (s), and the shares of it whose final
    #: event named the right person / a wrong person / "unknown" / nobody (no event).
    enrolled_s: float
    named_right: float
    named_wrong: float
    unknown: float
    unlabelled: float
    #: Never-enrolled speakers' scored speech time (s), and the share of it labelled
    #: unknown or not labelled at all (the correct outcome), and the share given a name.
    nonenrolled_s: float
    nonenrolled_unknown: float
    nonenrolled_named: float
    #: Enrolled-speaker turns of at least ``min_turn_s``: how many, the share named
    #: right by some event within the turn, and the onset-to-first-right-name latency.
    turns: int
    turns_named: float
    latency_median_s: float
    latencies_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return None if math.isnan(v) else round(v, 4)
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v
        return {k: clean(v) for k, v in self.__dict__.items()}


def _person_name(event: Mapping[str, Any]) -> str | None:
    person = event.get("person")
    return None if person is None else str(person["name"])


def score_meeting(
    turns: Sequence[Turn],
    finals: Sequence[Mapping[str, Any]],
    provisionals: Sequence[Mapping[str, Any]],
    name_of: Mapping[str, str],
    collar_s: float = 0.25,
    *,
    min_turn_s: float = 1.0,
    step_s: float = 0.01,
) -> MeetingScore:
    """Score one stream's ``speaker`` events against reference ``turns``.

    Args:
        turns: Reference turns (e.g. from :func:`read_rttm`); speaker labels are the
            reference's.
        finals: The server's final ``speaker`` events: dicts with ``start``, ``end``
            (stream seconds) and ``person`` (``{"id", "name"}`` or None = unknown).
        provisionals: The provisional ``speaker`` events (same fields); used only for
            the latency.
        name_of: Enrolled person name -> reference speaker label. Reference speakers
            that are values here are "enrolled"; all others are "never enrolled". A
            name not in the mapping counts as a wrong name.
        collar_s: Time excluded either side of every turn boundary (start and end).
        min_turn_s: Shortest enrolled-speaker turn used for the latency.
        step_s: Grid resolution (seconds).

    Time is scored on a ``step_s`` grid (a cell belongs to a turn or event when its
    centre lies in ``[start, end)``). Scored cells have exactly one reference speaker
    (overlapped speech is excluded) and lie farther than ``collar_s`` from every turn
    boundary. Each scored cell takes the label of the final event covering it (a later
    event wins should two overlap); a cell no final covers is "unlabelled".

    Latency: an event (provisional or final) counts for a turn when its ``end`` (when
    the server could have said it) lies in ``[turn.start, turn.end + collar_s]``, its
    span overlaps the turn, and it names that turn's speaker. The latency is that
    ``end`` minus the turn's onset, for the earliest such event.
    """
    enrolled_labels = set(name_of.values())
    horizon = max([t.end for t in turns] + [float(e["end"]) for e in finals] + [0.0])
    n = int(math.ceil(horizon / step_s)) + 1
    centres = _grid(n, step_s)
    active = _activity(turns, n, step_s)
    count = (np.sum(list(active.values()), axis=0) if active
             else np.zeros(n, dtype=np.int64))
    near_boundary = np.zeros(n, dtype=bool)
    for t in turns:
        for b in (t.start, t.end):
            near_boundary |= np.abs(centres - b) < collar_s
    scored = (count == 1) & ~near_boundary

    # Label per cell from the finals: -1 unlabelled, 0 unknown, 1 right, 2 wrong is
    # decided per speaker below, so keep the person name per cell.
    labelled = np.zeros(n, dtype=bool)
    names = np.full(n, "", dtype=object)
    for e in finals:
        cover = (centres >= float(e["start"])) & (centres < float(e["end"]))
        labelled |= cover
        names[cover] = _person_name(e) or ""
    mapped = np.array([name_of.get(x, "\0wrong") if x else "" for x in names], dtype=object)

    en_total = right = wrong = unknown = unlabelled = 0
    non_total = non_ok = 0
    for speaker, mask in active.items():
        cells = scored & mask
        if speaker in enrolled_labels:
            en_total += int(cells.sum())
            right += int((cells & labelled & (mapped == speaker)).sum())
            unknown += int((cells & labelled & (names == "")).sum())
            unlabelled += int((cells & ~labelled).sum())
            wrong += int((cells & labelled & (names != "") & (mapped != speaker)).sum())
        else:
            non_total += int(cells.sum())
            non_ok += int((cells & (~labelled | (names == ""))).sum())

    def share(a: int, b: int) -> float:
        return a / b if b else math.nan

    events = [e for e in list(finals) + list(provisionals) if _person_name(e) is not None]
    latencies: list[float] = []
    eligible = [t for t in turns if t.speaker in enrolled_labels and t.duration >= min_turn_s]
    for t in eligible:
        times = [float(e["end"]) - t.start for e in events
                 if t.start <= float(e["end"]) <= t.end + collar_s
                 and float(e["start"]) < t.end
                 and name_of.get(_person_name(e) or "") == t.speaker]
        if times:
            latencies.append(min(times))
    return MeetingScore(
        enrolled_s=en_total * step_s,
        named_right=share(right, en_total),
        named_wrong=share(wrong, en_total),
        unknown=share(unknown, en_total),
        unlabelled=share(unlabelled, en_total),
        nonenrolled_s=non_total * step_s,
        nonenrolled_unknown=share(non_ok, non_total),
        nonenrolled_named=share(non_total - non_ok, non_total),
        turns=len(eligible),
        turns_named=share(len(latencies), len(eligible)),
        latency_median_s=float(np.median(latencies)) if latencies else math.nan,
        latencies_s=latencies,
    )


# -- synthetic conversations ---------------------------------------------------------------


def stitch(
    utterances: Sequence[Utterance],
    gap_s: float,
    *,
    max_turn_s: float | Sequence[float | None] | None = None,
    trim: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[Turn]]:
    """Join utterances into one conversation, one turn per utterance, in order.

    ``gap_s`` seconds of digital silence separate consecutive turns (0: the next speaker
    starts right away, an interruption with no pause). ``trim``, if given, is applied to
    each utterance's audio first (e.g. to cut leading and trailing silence); then the
    audio is cut to ``max_turn_s`` (one value for all, or one per utterance; None keeps
    it whole). Returns ``(audio, turns)``: float32 16 kHz audio and the reference turns
    (seconds) of the placed audio.
    """
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0 seconds, got {gap_s}")
    if max_turn_s is None or isinstance(max_turn_s, (int, float)):
        limits: list[float | None] = [max_turn_s] * len(utterances)
    else:
        limits = list(max_turn_s)
        if len(limits) != len(utterances):
            raise ValueError("max_turn_s needs one value per utterance")
    gap = np.zeros(int(round(gap_s * SAMPLE_RATE)), dtype=np.float32)
    pieces: list[np.ndarray] = []
    turns: list[Turn] = []
    position = 0
    for k, (u, limit) in enumerate(zip(utterances, limits)):
        x = read_audio(u.path)
        if trim is not None:
            x = np.asarray(trim(x), dtype=np.float32)
        if limit is not None:
            x = x[: int(round(limit * SAMPLE_RATE))]
        if k and len(gap):
            pieces.append(gap)
            position += len(gap)
        pieces.append(x)
        turns.append(Turn(position / SAMPLE_RATE, (position + len(x)) / SAMPLE_RATE, u.speaker))
        position += len(x)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return audio, turns
