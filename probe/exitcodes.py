"""Exit codes of every ``kzprobe`` command, defined once (BSD ``sysexits.h`` values, as systemd
and shell scripts read them; 130 is the shell's 128 + SIGINT).

:class:`ExitCode` is the one definition; the ``EX_*`` names are its members, for the CLIs
(:mod:`probe.cli`, :mod:`probe.lab.cli`, :mod:`analysis.cli`) that import them from here.
What each code means for each command is in its module docstring and the README.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class ExitCode(IntEnum):
    """The exit codes (sysexits(3), plus 130 for an interruption)."""

    OK = 0
    USAGE = 64  # bad command line (a flag's value)
    DATAERR = 65  # the input data is wrong (a lab verdict differs from the scenario's truth)
    NOINPUT = 66  # an input file is missing or holds nothing usable
    UNAVAILABLE = 69  # a service needed is unavailable (OONI's bucket or API cannot be read)
    SOFTWARE = 70  # an internal error (a bug)
    OSERR = 71  # the operating system refused (e.g. network namespaces)
    CANTCREAT = 73  # an output file or directory cannot be created
    IOERR = 74  # an I/O error midway
    TEMPFAIL = 75  # nothing could be judged (the vantage is offline): try again later
    NOPERM = 77  # not permitted (the lab needs root)
    CONFIG = 78  # bad configuration (config file, consent not given, missing extras)
    INTERRUPTED = 130  # SIGINT / SIGTERM


#: What EX_CONFIG says when the analysis extras (or a module they import) are missing: the extra by
#: name, how to install it, and the make target that installs it in a checkout (README, "Analysis").
ANALYSIS_INSTALL_HINT: Final = ("install the analysis extras kzprobe[analysis] (pip install 'kzprobe[analysis]'; "
                                "in a checkout: make venv-test)")

EX_OK: Final = ExitCode.OK
EX_USAGE: Final = ExitCode.USAGE
EX_DATAERR: Final = ExitCode.DATAERR
EX_NOINPUT: Final = ExitCode.NOINPUT
EX_UNAVAILABLE: Final = ExitCode.UNAVAILABLE
EX_SOFTWARE: Final = ExitCode.SOFTWARE
EX_OSERR: Final = ExitCode.OSERR
EX_CANTCREAT: Final = ExitCode.CANTCREAT
EX_IOERR: Final = ExitCode.IOERR
EX_TEMPFAIL: Final = ExitCode.TEMPFAIL
EX_NOPERM: Final = ExitCode.NOPERM
EX_CONFIG: Final = ExitCode.CONFIG
EX_INTERRUPTED: Final = ExitCode.INTERRUPTED

__all__ = ["ANALYSIS_INSTALL_HINT", "EX_CANTCREAT", "EX_CONFIG",
           "EX_DATAERR", "EX_INTERRUPTED", "EX_IOERR", "EX_NOINPUT", "EX_NOPERM",
           "EX_OK", "EX_OSERR", "EX_SOFTWARE", "EX_TEMPFAIL", "EX_UNAVAILABLE", "EX_USAGE", "ExitCode"]
