"""kzprobe's loopback benchmark (``make bench`` = ``python -m bench``).

What is measured
----------------
For N inputs (``--inputs``, default 500) — ``https://site{i}.bench.example/`` — against
local TLS servers, at concurrency 1 and 64:

1. **kzprobe's full web test**, through :func:`probe.runner.run` (the code path of
   ``kzprobe run``): per input, UDP DNS A+AAAA to the "ISP" resolver, the DoH control
   (A+AAAA), a TCP connect + TLS handshake with chain capture and verification
   (``cryptography``), MITM chain inspection, an HTTP GET over that same connection
   (the run's one HTTP session; a second handshake only when the server picked h2:
   ``--server-alpn h2,http/1.1``), blockpage fingerprints, the verdict,
   and one JSONL record written and fsynced. Health canaries: the DoH canary only.
2. **The baseline**: an aiohttp GET loop over the same URLs at the same concurrency,
   each GET preceded by the same DNS the probe does (A+AAAA to the UDP resolver, one
   socket per query, and A+AAAA over DoH on the shared session; replies parsed with
   dnspython) — one :class:`aiohttp.ClientSession`, TLS verified against the same test
   CA, bodies read in full, names mapped to the loopback listeners by a static resolver
   (no DNS). Every input is a different host name, so every GET is a fresh TCP + TLS
   connection, as it would be for a list of different websites.

Figures: measurements (or GETs) per second of wall time; CPU seconds per measurement
= ``getrusage(RUSAGE_SELF)`` user+sys of the measuring process over the pass divided
by the inputs; the ratio kzprobe ÷ baseline; and the peak RSS (the worker's own
``VmHWM``: ``ru_maxrss`` carries over fork/exec) of a separate pass of
``--rss-inputs`` (default 1,000) inputs at concurrency 64. Targets (issue 13's table):
CPU per measurement ≤ 2× the baseline (a GET *and the same DNS queries*: A+AAAA over UDP
and over DoH) and ≤ 5 ms at concurrency 64; ≥ 150 measurements/s at concurrency 64 *with
the shipped defaults* (the "dflt" pass, dns_listen_s 1.5 s); peak RSS ≤ 90 MB for 1,000
inputs. The table says "target met" / "NOT met" for each; the exit status is 1 when one
is missed (``--no-check``: 0 either way).

How
---
* Every pass runs in a **fresh process** (:mod:`bench.worker`), so its CPU and RSS are
  the measuring side's alone, and no pass warms caches for the next one. The short
  passes (both baselines, kzprobe above concurrency 1, the 1-input start-up pass) run
  ``--repeat`` times (3), interleaved, and the median is reported with the min–max
  range: figures on this 2-core VM vary by ±10–15 % from run to run. An unmeasured
  warm-up pass of each kind runs first.
* The servers run in **another process** (:mod:`bench.servers`): ``--servers`` (32)
  HTTPS listeners, one per logical address (192.0.2.x and 198.51.100.x, declared
  public with ``bogons.public`` and mapped to loopback ports with ``connect_to``),
  serving a ~10 KB HTML page with a ``<title>``; a UDP DNS server and a DoH server
  answering ``site{i}.bench.example`` with its address. One trustme CA (ECDSA) issues
  one leaf for ``*.bench.example`` and ``127.0.0.1``. The server process's CPU per
  pass is read from ``/proc`` and shown too (the machine has only so many cores).
* kzprobe is configured by a TOML file loaded with :func:`probe.config.load_settings`
  (``env={}``): no system resolver, the fake UDP resolver, the fake DoH control, the
  test CA as the only anchor with the "relaxed" policy, no internet canaries, fsync on.
* ``timeouts.dns_listen_s`` — how long the probe keeps listening after the first UDP
  DNS reply, for injected duplicates (FC-07) — is lowered to ``--listen-s`` (0.05 s)
  for the main passes: a run waits once, at its end, for its last inputs' windows, which
  would weigh on a 500-input pass's wall time (CPU per measurement hardly depends on it).
  The rate pass (``--rate-inputs``, 3,000 inputs, concurrency 64, ``--repeat`` runs) keeps
  the shipped default 1.5 s (``--no-default-listen`` skips it) and gives two rates: the
  **steady state** (records per second between the 10th and the 90th percentile record:
  the pace once the run is going) and **end to end** (inputs ÷ the wall time of
  :func:`probe.runner.run`, the start-up and the last window included), each against the
  150/s target, with the run's start-up (time to the first record), its tail (last record
  to the end) and the share of the wall time the probe was on a CPU beside them.

Nothing leaves the machine: every socket is on 127.0.0.1; the logical addresses are
never dialled. Temporary files (certificates, JSONL output) live in a temporary
directory removed at the end (``--keep`` keeps it).
"""
