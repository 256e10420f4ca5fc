"""``python -m probe`` = the ``kzprobe`` command."""

import sys

from probe.cli import main

sys.exit(main())
