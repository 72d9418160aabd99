"""Voiceprints made for a phone line: a second index that phone rooms search.

A room whose audio arrives through a phone line (``match.channel: telephone``) embeds its
speech with the model's telephone-line variant. With ``enroll.line_voiceprints`` on,
every enrolment also stores a **line voiceprint**: the enrolment speech passed through
:data:`~streamer.phone_line.LINE_COPIES` random phone lines
(:func:`streamer.phone_line.line_copies`), each copy embedded by the variant, the mean
re-normalised (:func:`streamer.phone_line.line_voiceprint`). Phone rooms then compare like
with like (``bench/narrowband.py``; docs/accuracy.md, "The telephone band").

Storage: line voiceprints are voiceprint rows of the model id ``MODEL+telephone``
(:func:`line_model_id`) in the same database; a second registry object of that model id
(:class:`Lines` holds it) keeps their index, as a registry of another model would. People
enrolled before (no line row) get their wideband voiceprint as line voiceprint once, when
the server starts (:meth:`Lines.fill_in`), and a real one at their next enrolment (the
two are then averaged by speech, as any two enrolments are).

Call order: the server opens the main registry, then :meth:`Lines.open`; every change
made through the main registry is passed on with :meth:`Lines.deleted`,
:meth:`Lines.renamed` and :meth:`Lines.roster_set` before it is acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from .registry import Registry

__all__ = ["LINE_CHANNELS", "Lines", "line_model_id", "searched"]

logger = logging.getLogger("streamer.lines")

#: Line channels (``match.channel``) that get voiceprints of their own. Far rooms do not:
#: the same recipe with far-field copies gained little (docs/accuracy.md).
LINE_CHANNELS = ("telephone",)
#: People given their line voiceprint per transaction by :meth:`Lines.fill_in`.
FILL_IN_BATCH = 1000


def line_model_id(model_id: str, channel: str) -> str:
    """The model id under which ``channel``'s line voiceprints of ``model_id`` are stored."""
    return f"{model_id}+{channel}"


class Lines:
    """The line registries of one server, kept in step with its main registry.

    Args:
        main: The server's registry (the model's own voiceprints).
        open_line: Makes the (unopened) registry of a model id, on the same database.
        channels: The line channels to keep (those of :data:`LINE_CHANNELS` the
            configuration uses and the server has a variant for).
    """

    def __init__(self, main: Registry, open_line: Callable[[str], Registry],
                 channels: Sequence[str]) -> None:
        self.main = main
        self._open_line = open_line
        self.channels = tuple(channels)
        self._lines: dict[str, Registry] = {}

    def open(self) -> None:
        """Open each line's registry (after the main one) and fill in the people it lacks.
        Raises like :meth:`Registry.open` and :meth:`fill_in`; closes what it opened
        then."""
        try:
            for channel in self.channels:
                registry = self._open_line(line_model_id(self.main.model_id, channel))
                registry.open()
                self._lines[channel] = registry
                filled = self.fill_in(channel)
                if filled:
                    logger.info("%d people had no %s voiceprint: their wideband one stands "
                                "in until they enrol again", filled, channel)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every line registry; idempotent."""
        lines, self._lines = self._lines, {}
        for registry in lines.values():
            registry.close()

    def registry(self, channel: str) -> Registry:
        """The registry a room of ``channel`` searches: the line's, or the main one."""
        return self._lines.get(channel, self.main)

    def kept(self) -> tuple[str, ...]:
        """The channels whose line voiceprints are kept (after :meth:`open`)."""
        return tuple(self._lines)

    def fill_in(self, channel: str) -> int:
        """Give everyone in the main index without a line voiceprint of ``channel`` their
        wideband voiceprint as one (stored, so once). Returns how many. Raises
        :class:`~streamer.errors.RegistryError` when a write fails."""
        line = self._lines[channel]
        missing = [person_id for person_id, _name in self.main.replica.names().values()
                   if person_id not in line.replica]
        if not missing:
            return 0
        speech = {p.id: p.speech_s for p in self.main.people()}
        entries = []
        for person_id in missing:
            entry = self.main.replica.vector_of(person_id)
            if entry is not None and person_id in speech:  # else deleted meanwhile
                speech_s = speech[person_id]
                entries.append((person_id, entry[1], speech_s if speech_s > 0 else 1.0))
        # (one deleted meanwhile by another server is skipped by add_first_voiceprints)
        return sum(line.add_first_voiceprints(entries[start:start + FILL_IN_BATCH])
                   for start in range(0, len(entries), FILL_IN_BATCH))

    def add(self, person_id: str, vectors: dict[str, np.ndarray], speech_s: float) -> None:
        """Store the line voiceprints of one enrolment of ``person_id`` (channel -> unit
        vector, for the channels of :meth:`kept`). Raises like
        :meth:`Registry.add_voiceprint`."""
        for channel, vector in vectors.items():
            self._lines[channel].add_voiceprint(person_id, vector, speech_s)

    def deleted(self, person_id: str) -> None:
        """``person_id`` was deleted through the main registry: erase them from every
        line's index and cache files. Raises ``RegistryError``."""
        for registry in self._lines.values():
            registry.follow_delete(person_id)

    def renamed(self, person_id: str, name: str) -> None:
        """``person_id`` was renamed through the main registry. Never raises."""
        for registry in self._lines.values():
            registry.follow_rename(person_id, name)

    def roster_set(self, room: str, roster: tuple[str, ...] | None) -> None:
        """``room``'s roster was set through the main registry. Never raises."""
        for registry in self._lines.values():
            registry.follow_roster(room, roster)


def searched(registry: Registry, lines: Lines | None, channel: str) -> Registry:
    """The registry that requests and live streams of ``channel`` (``match.channel``)
    search: the line's own voiceprints when ``lines`` keeps them, else ``registry``."""
    return registry if lines is None else lines.registry(channel)
