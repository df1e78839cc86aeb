"""Every Redis key, stream and consumer-group name Touchpoint uses, in one place.

Keys carry the configured prefix and a Cluster hash tag: a stream and everything that must be
touched with it in one MULTI (its dead-letter stream) share a tag, so they land in one slot.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The stream every channel publishes captured contacts to.
EVENTS = "events"
#: The collector's chain, each stream written by one agent and read by the next:
#: events -filter-> filtered -sessions-> sessionized -identity-> identified -> profile, sync.
FILTERED = "filtered"
SESSIONIZED = "sessionized"
IDENTIFIED = "identified"
#: Finished (and periodically, open) sessions, written by the sessions agent for sync.
SESSIONS = "sessions"
#: Streams that exist; `touchpoint bus stats` reports each of them.
STREAMS = (EVENTS, FILTERED, SESSIONIZED, IDENTIFIED, SESSIONS)

#: Field of a stream entry holding its msgpack-packed list of events.
ENTRY_FIELD = b"e"


@dataclass(frozen=True)
class Keys:
    prefix: str = "tp"

    def stream(self, name: str) -> str:
        return f"{self.prefix}:{{{name}}}:stream"

    def dead_letter(self, name: str) -> str:
        """Entries that failed ``bus.max_deliveries`` times; same slot as their stream."""
        return f"{self.prefix}:{{{name}}}:dead"

    def stream_name(self, key: str) -> str:
        """Inverse of :meth:`stream`."""
        return key.split("{", 1)[1].split("}", 1)[0]

    def streams_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:stream"

    def seen(self, site: str, window_ms: int, bucket: int) -> str:
        """The client ``messageId`` s a site published in one de-duplication time bucket."""
        return f"{self.prefix}:seen:{site}:{window_ms}:{bucket}"

    # --- the built-in channel-counts agent -------------------------------------------------------

    def channel_counts(self) -> str:
        return f"{self.prefix}:{{counts}}:channels"

    def channel_counts_minute(self, minute: int) -> str:
        """Events per channel that arrived in one minute (epoch minutes)."""
        return f"{self.prefix}:{{counts}}:minute:{minute}"

    def channel_counts_seen(self, day: str) -> str:
        """Event ids already counted on ``day`` (UTC date), for idempotent replays."""
        return f"{self.prefix}:{{counts}}:seen:{day}"
