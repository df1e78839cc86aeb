"""Channel adapters: one sub-package per channel (weblog, email, pos, mobile).

Each turns its traffic into :class:`gateway.events.Event` s and delivers push-engine output.
A channel never imports another channel; it depends on ``gateway`` contracts only.
"""
