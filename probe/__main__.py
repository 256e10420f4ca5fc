"""``python -m probe`` = the ``kzprobe`` command."""

import sys

from probe.cli import main

if __name__ == "__main__":
    sys.exit(main())
