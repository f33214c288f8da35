"""Bad records and warnings: nothing a reader meets is dropped without a count and a location.

A reader turns every problem with one record into a :class:`BadRecord`. The caller's
:class:`BadRecords` decides what happens: raise it (the default, so a typo in line 80,000 of a
training file stops the run before training starts) or count it and move on
(``skip_bad_records``), keeping the first few locations so the user can go and fix them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..errors import EmbforgeError

logger = logging.getLogger("embforge.data")

#: How many locations a skip report keeps; enough to find a pattern, short enough for one log line.
KEEP_LOCATIONS = 5


class BadRecord(EmbforgeError):
    """One record that cannot be used; ``location`` is "file:line" and ``field`` the offending key."""

    def __init__(self, location: str, message: str, field: str | None = None) -> None:
        self.location = location
        self.field = field
        super().__init__(f"{location}: {message}")


@dataclass
class BadRecords:
    """The policy for bad records plus the counter a caller reads after a skipping pass."""

    skip: bool = False
    count: int = 0
    first_locations: list[str] = field(default_factory=list)
    first_messages: list[str] = field(default_factory=list)

    def handle(self, problem: BadRecord) -> None:
        """Raise ``problem`` unless skipping; when skipping, count it and keep its location."""
        if not self.skip:
            raise problem
        self.count += 1
        if len(self.first_locations) < KEEP_LOCATIONS:
            self.first_locations.append(problem.location)
            self.first_messages.append(str(problem))

    def log_summary(self, source: object) -> None:
        """One warning per source read with skipping on, so skipped records show up in the log."""
        if self.count:
            logger.warning("%s: skipped %d bad record(s); first at %s", source, self.count,
                           ", ".join(self.first_locations))

    def as_dict(self) -> dict[str, object]:
        return {"count": self.count, "first_locations": list(self.first_locations),
                "first_messages": list(self.first_messages)}


_WARNED: set[str] = set()


def warn_or_raise(key: str, message: str, strict: bool) -> None:
    """Usable-but-suspicious data: an error under ``strict``, otherwise one warning per ``key``.

    Warning once keeps a million short negative lists from flooding the log while still telling
    the user that the condition exists (with the first place it was met).
    """
    if strict:
        raise EmbforgeError(message)
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning("%s (further occurrences are not reported; strict=True makes this an error)", message)


def reset_warnings() -> None:
    """Forget which warnings were given (tests, or a new training run in the same process)."""
    _WARNED.clear()
