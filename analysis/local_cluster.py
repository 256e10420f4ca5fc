"""The dask cluster the analysis starts on this machine (``kzprobe report --engine dask``, ``kzprobe ooni
sync --engine dask``): one place for what both need of it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import LocalCluster


def local_cluster(**options: Any) -> LocalCluster:
    """A :class:`distributed.LocalCluster` with its HTTP endpoints on loopback only (the default is every
    interface, port 8787) and ``distributed``'s loggers at the CLI's level: distributed sets them to INFO
    when imported (~33 lines a sync: scheduler, nanny, the dashboard's URL); NOTSET leaves the CLI's
    (WARNING, INFO with -v, DEBUG with -vv). ``options``: LocalCluster's others (``n_workers``,
    ``processes`` ...).

    Raises:
        ImportError: dask's ``distributed`` is not installed.
    """
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.NOTSET)
    return LocalCluster(dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0", **options)
