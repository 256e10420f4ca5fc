"""Measurement primitives: one module each (dns, tcp, tls, http).

Each exposes an ``async`` function that returns a frozen, keyword-only dataclass
record carrying ``failure`` (an OONI failure string, ``None`` on success) and the
``t0``/``t`` timings of :class:`probe.timing.Clock`. A failed network step is data:
these functions do not raise for network errors, only for bad arguments.
"""
