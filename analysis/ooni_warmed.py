"""Imported for its effect by the OONI sync's fork server (a preload: :func:`analysis.ooni_sync._executor`):
the judge's databases (blockpage fingerprints, interception roots; :func:`analysis.ooni.warm`, ~0.15
CPU-s) are built once there, before any worker is forked, so every worker starts with them instead of
building its own copy."""

from __future__ import annotations

from analysis.ooni import warm

warm()
