"""kzprobe: a network-disruption measurement probe.

The measuring side lives here: targets, the DNS/TCP/TLS/HTTP primitives
(:mod:`probe.measure`), the web test (:mod:`probe.nettests.web`), verdicts,
records in OONI's base data format, storage, and the CLI.
"""

__version__ = "0.1.0"
SOFTWARE_NAME = "kzprobe"
