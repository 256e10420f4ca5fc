"""Imported for its effect by the OONI sync's fork server (preloaded before the judging modules:
:func:`analysis.ooni_sync._executor`): the fork server dies with the sync's process (Linux,
:func:`analysis.parent_death.die_with_parent`), and so its workers, which die with it (break test F3).
Never imported elsewhere: a process imports it to be killed with its parent."""

from __future__ import annotations

from analysis.parent_death import die_with_parent

die_with_parent()
