"""kzprobe's exceptions and exit codes, defined once.

:class:`KzprobeError` is the base of every exception kzprobe raises on purpose: bad
configuration or input, named with the file, key and numbers that explain it. A failed
network step is never one (it is data: a failure string, :mod:`probe.failures`), and an
exception that is not a ``KzprobeError`` is a bug. Subclasses keep ``ValueError`` (or
``OSError``, ``RuntimeError``) as a mixin where callers already catch that, so no caller
breaks; the CLIs catch the specific classes, never a bare ``ValueError`` — a bug must not be
reported as "bad configuration" (issue 10).

The exit codes are :class:`probe.exitcodes.ExitCode` (re-exported here).
"""

from __future__ import annotations

from probe.exitcodes import ExitCode

__all__ = ["ExitCode", "KzprobeError"]


class KzprobeError(Exception):
    """Base of kzprobe's own exceptions (bad configuration or input, never a network step's failure).

    The message names the input (file, key, line) and carries the numbers that explain it.
    """
