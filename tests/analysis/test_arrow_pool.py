"""analysis.load puts Arrow's buffers in the system allocator's pool unless ARROW_DEFAULT_MEMORY_POOL says otherwise
(mimalloc's page faults were ~5 CPU-s of the 1M-row store report: docs/speed.md)."""

from __future__ import annotations

import os
import subprocess
import sys


def _pool_after_import(env_pool: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env_pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = env_pool
    code = ("import analysis.load, pyarrow as pa; a = pa.array(['x'] * 10); "
            "print(pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_the_system_pool_by_default() -> None:
    assert _pool_after_import(None) == "system"


def test_the_environment_chooses_when_it_says() -> None:
    assert _pool_after_import("mimalloc") == "mimalloc"
