"""Exit codes of every ``kzprobe`` command, defined once (BSD ``sysexits.h`` values, as systemd
and shell scripts read them; 130 is the shell's 128 + SIGINT).

The CLIs (:mod:`probe.cli`, :mod:`probe.lab.cli`, :mod:`analysis.cli`) import them from here;
what each code means for each command is in its module docstring and the README.
"""

from __future__ import annotations

from typing import Final

EX_OK: Final = 0
EX_USAGE: Final = 64  # bad command line (a flag's value)
EX_DATAERR: Final = 65  # the input data is wrong (a lab verdict differs from the scenario's truth)
EX_NOINPUT: Final = 66  # an input file is missing or holds nothing usable
EX_SOFTWARE: Final = 70  # an internal error (a bug)
EX_OSERR: Final = 71  # the operating system refused (e.g. network namespaces)
EX_CANTCREAT: Final = 73  # an output file or directory cannot be created
EX_IOERR: Final = 74  # an I/O error midway
EX_TEMPFAIL: Final = 75  # nothing could be judged (the vantage is offline): try again later
EX_NOPERM: Final = 77  # not permitted (the lab needs root)
EX_CONFIG: Final = 78  # bad configuration (config file, consent not given, missing extras)
EX_INTERRUPTED: Final = 130  # SIGINT / SIGTERM

__all__ = ["EX_CANTCREAT", "EX_CONFIG", "EX_DATAERR", "EX_INTERRUPTED", "EX_IOERR", "EX_NOINPUT", "EX_NOPERM",
           "EX_OK", "EX_OSERR", "EX_SOFTWARE", "EX_TEMPFAIL", "EX_USAGE"]
