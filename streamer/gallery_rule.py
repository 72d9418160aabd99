"""The large-gallery rule: how 1:N decisions tighten as more people are enrolled (pure).

With one fixed threshold, a never-enrolled voice is named as someone more and more often
as the gallery grows (false accepts grow roughly as ``1 - (1 - FAR)^N``): measured on
galleries of distinct people (bench/gallery.py), 2.5 % at 1 k people, 59 % at 100 k
and 87 % at 1 M with the threshold 1.0. The rule keeps it near 0.5 % at every size.
Configured by ``match.large_gallery_*``; used by :mod:`streamer.identify`'s callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GalleryRule"]


@dataclass(frozen=True)
class GalleryRule:
    """The large-gallery rule (``match.large_gallery_*``).

    Up to ``from_people`` people enrolled it changes nothing. Beyond, the threshold is
    ``base - tighten_per_tenfold * log10(people / from_people)`` and the nearest person
    is named only when the second nearest is at least ``margin`` farther (both
    ``distance``). ``tighten_per_tenfold = margin = 0`` turns it off.
    """

    from_people: int = 100
    tighten_per_tenfold: float = 0.035
    margin: float = 0.06

    def applies(self, people: int) -> bool:
        """Whether a gallery of ``people`` is large enough for the rule."""
        return people > self.from_people

    def threshold(self, base: float, people: int) -> float:
        """The distance threshold with ``people`` enrolled, from the room's ``base``."""
        if not self.applies(people):
            return float(base)
        tenfolds = math.log10(people / max(1, self.from_people))
        return round(float(base) - self.tighten_per_tenfold * tenfolds, 4)

    def margin_at(self, people: int) -> float:
        """The first-to-second distance margin with ``people`` enrolled (0: none)."""
        return float(self.margin) if self.applies(people) else 0.0

    def candidates(self, top_k: int, people: int) -> int:
        """How many candidates to search for to report ``top_k``: at least 2 when the
        margin applies (it compares the first with the second)."""
        return max(top_k, 2) if self.margin_at(people) else top_k
