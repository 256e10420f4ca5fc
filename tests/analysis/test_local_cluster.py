"""analysis.local_cluster: the one place both dask engines (report, ooni sync) start their cluster."""

from __future__ import annotations

import logging

import pytest


def test_local_cluster_listens_on_loopback_and_leaves_distributed_at_the_cli_level() -> None:
    pytest.importorskip("distributed")
    from analysis.local_cluster import local_cluster

    logging.getLogger("distributed").setLevel(logging.INFO)  # as importing distributed leaves it
    with local_cluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        assert logging.getLogger("distributed").level == logging.NOTSET
        # the HTTP endpoints' listening sockets (tornado's; dashboard_link names the host's address whatever
        # the bind): the scheduler's dashboard and the worker's, loopback only
        servers = [cluster.scheduler.http_server, *(w.http_server for w in cluster.workers.values())]
        bound = {sock.getsockname()[0] for server in servers for sock in server._sockets.values()}
        assert bound == {"127.0.0.1"}
