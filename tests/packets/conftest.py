"""Packet tests: live captures on loopback need CAP_NET_RAW (root in CI); without it they skip,
unless ``KZPROBE_REQUIRE_LAB=1`` (CI), which makes the skip a failure."""

from __future__ import annotations

import os

import pytest

from probe.packets.privileges import check


@pytest.fixture(scope="session")
def need_capture() -> None:
    why = check().reason
    if why:
        if os.environ.get("KZPROBE_REQUIRE_LAB") == "1":
            pytest.fail(f"KZPROBE_REQUIRE_LAB=1 but packets cannot be captured: {why}")
        pytest.skip(why)
