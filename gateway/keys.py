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
#: Finished sessions (``gateway.datamart.sessions.SessionRecord`` s, packed under ENTRY_FIELD),
#: written by the sessions agent for sync.
SESSIONS = "sessions"
#: The erp agent's stream: requests for an immediate sync (``POST /v1/erp/notify``); the
#: agent also works on its tick, each entity on its interval.
ERP = "erp"
#: Streams whose entries hold packed events (the others hold records of their own).
EVENT_STREAMS = frozenset({EVENTS, FILTERED, SESSIONIZED, IDENTIFIED})
#: Streams that exist; `touchpoint bus stats` reports each of them.
STREAMS = (EVENTS, FILTERED, SESSIONIZED, IDENTIFIED, SESSIONS)

#: Field of a stream entry holding its msgpack-packed list of events.
ENTRY_FIELD = b"e"
#: Field of an entry put back from the dead letters: the one group it is for.
FOR_GROUP_FIELD = b"for"


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

    # --- the store channel ---------------------------------------------------------------------

    def pos_nonce(self, terminal: str, nonce: str) -> str:
        """A nonce a till used (replay protection); single-key commands only, no hash tag."""
        return f"{self.prefix}:pos:nonce:{terminal}:{nonce}"

    def coupon(self, code: str) -> str:
        """Hash of a coupon a kiosk issued: where, its discount, the order that redeemed it
        (expires ``pos.coupon_valid`` after it was issued)."""
        return f"{self.prefix}:coupon:{code}"

    def order_coupons(self, order_id: str) -> str:
        """Set of the coupons a sale redeemed, for its void to give back (expires with them)."""
        return f"{self.prefix}:order-coupons:{order_id}"

    def kiosk_session(self, session: str) -> str:
        """Hash of an open kiosk session: its store, kiosk and customer id (expires by itself)."""
        return f"{self.prefix}:kiosk:session:{session}"

    # --- the sync agent ------------------------------------------------------------------------

    def sync_touched(self) -> str:
        """Customers whose profile changed since the sync agent's last snapshot."""
        return f"{self.prefix}:{{sync}}:touched"

    def sync_touched_taken(self) -> str:
        """The touched set a snapshot is working through (same slot, for RENAME)."""
        return f"{self.prefix}:{{sync}}:touched:taken"

    # --- the ERP connector ------------------------------------------------------------------
    # One tag, {erp}: a sync updates the stock of many SKUs and its status in one MULTI.

    def erp_stock(self, sku: str) -> str:
        """Hash location → quantity on hand of one SKU, as last synced from the ERP."""
        return f"{self.prefix}:{{erp}}:stock:{sku}"

    def erp_product_ids(self) -> str:
        """Hash ERP product id → the SKU it had at the last sync (to see SKUs renamed)."""
        return f"{self.prefix}:{{erp}}:product-ids"

    def erp_inactive(self) -> str:
        """Set of the SKUs the ERP deactivated (discontinued): never in stock for offers."""
        return f"{self.prefix}:{{erp}}:inactive"

    def erp_status(self) -> str:
        """Hash ``<entity>.<field>``: synced_at, cursor, rows, skipped, stale, failures, error."""
        return f"{self.prefix}:{{erp}}:status"

    def erp_sales(self) -> str:
        """Hash ERP order id → ``done`` / ``cancelled``: the orders already published."""
        return f"{self.prefix}:{{erp}}:sales"

    # --- the built-in channel-counts agent -------------------------------------------------------

    def channel_counts(self) -> str:
        return f"{self.prefix}:{{counts}}:channels"

    def channel_counts_minute(self, minute: int) -> str:
        """Events per channel that arrived in one minute (epoch minutes)."""
        return f"{self.prefix}:{{counts}}:minute:{minute}"

    def channel_counts_seen(self, day: str) -> str:
        """Event ids already counted on ``day`` (UTC date), for idempotent replays."""
        return f"{self.prefix}:{{counts}}:seen:{day}"

    # --- the collector and the data mart ---------------------------------------------------------
    # Tags: a visitor's open session and its replay map share {v:<site>:<visitor>}; a site's
    # whole identity graph shares {ig:<site>} (merges are one atomic script); a customer's
    # profile shares {c:<customer>} (each event is applied by one script on it).

    def filter_seen(self, site: str, window_ms: int, bucket: int) -> str:
        """Event ids the filter passed in one de-duplication time bucket."""
        return f"{self.prefix}:{{filter:{site}}}:seen:{window_ms}:{bucket}"

    def open_session(self, site: str, visitor: str) -> str:
        """A visitor's open session: hash ``v`` (version token), ``s`` (packed state)."""
        return f"{self.prefix}:{{v:{site}:{visitor}}}:session"

    def session_of_events(self, site: str, visitor: str, bucket: int) -> str:
        """event id → session id for a visitor's events applied in one time bucket (replays)."""
        return f"{self.prefix}:{{v:{site}:{visitor}}}:applied:{bucket}"

    def idle_sessions(self) -> str:
        """Open-session keys scored by when they last saw an event (wall clock, ms)."""
        return f"{self.prefix}:{{sessions}}:idle"

    def identity(self, site: str) -> str:
        """Base of a site's identity graph; the identity script derives the names below from it."""
        return f"{self.prefix}:{{ig:{site}}}"

    def identifier(self, site: str, kind: str, value: str) -> str:
        """One identifier (kind: email, user_id, ...) → the customer id it belongs to."""
        return f"{self.identity(site)}:id:{kind}:{value}"

    def identity_customer(self, site: str, customer_id: str) -> str:
        """Hash: first_seen, identifier counts, merged_into (when folded into another)."""
        return f"{self.identity(site)}:cust:{customer_id}"

    def customer_identifiers(self, site: str, customer_id: str) -> str:
        """Set of ``kind:value`` a customer holds."""
        return f"{self.identity(site)}:ids:{customer_id}"

    def merge_log(self, site: str, customer_id: str) -> str:
        """List of JSON records: merges and refused links, oldest first."""
        return f"{self.identity(site)}:log:{customer_id}"

    def merged_from(self, site: str, customer_id: str) -> str:
        """Set of the customer ids folded into this one."""
        return f"{self.identity(site)}:from:{customer_id}"

    def identity_flags(self, site: str) -> str:
        """Hash ``kind:value`` → JSON flag, for identifiers refused as too widely shared."""
        return f"{self.identity(site)}:flags"

    def identity_links(self, site: str) -> str:
        """Hash ``kind:value`` → customers the identifier has glued together."""
        return f"{self.identity(site)}:links"

    def pending_folds(self, site: str) -> str:
        """Set of ``"<merged> <survivor>"`` whose profiles are not yet folded together."""
        return f"{self.identity(site)}:folds"

    def profile(self, customer_id: str, part: str) -> str:
        """One part (``PROFILE_PARTS``) of a customer's profile."""
        return f"{self.prefix}:{{c:{customer_id}}}:{part}"

    def profile_keys(self, customer_id: str) -> list[str]:
        return [self.profile(customer_id, part) for part in PROFILE_PARTS]


#: The keys of a profile, in the order the profile script takes them: ``p`` (hash: site,
#: counters, first/last seen, merged_into), ``attr`` (hash: traits, consent, time zone as
#: JSON with their time), recent ``viewed``/``carted``/``bought`` (zsets: product → time),
#: ``interests`` (zset: category → score), ``stores`` (zset: store → purchases), ``sessions``
#: (zset: recent session ids → time), ``done`` (zset: processed event ids → when).
PROFILE_PARTS = (
    "p", "attr", "viewed", "carted", "bought", "interests", "stores", "sessions", "done",
)  # fmt: skip
