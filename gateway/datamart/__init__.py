"""The data mart in Redis: what the collector agents know about visits and customers.

- :mod:`~gateway.datamart.referrers`, :mod:`~gateway.datamart.sessions`,
  :mod:`~gateway.datamart.identifiers`, :mod:`~gateway.datamart.deltas`: the rules, as plain
  functions without I/O (where a visit ends, where it came from, who an event names, what an
  event changes in a profile).
- :mod:`~gateway.datamart.identity`: the identity graph (identifier → customer, merges, flags,
  the merge log) and its one atomic script per site.
- :mod:`~gateway.datamart.store`: applying profile changes exactly once per event, and folding
  a merged customer's profile into the survivor's.
- :mod:`~gateway.datamart.profiles`: the read API (customer 360, look-ups), export and erasure.

Every key name comes from :mod:`gateway.keys`.
"""
