"""The lab: a simulated Kazakh ISP in Linux network namespaces (issue 4).

Namespaces ``client`` (the probe) — ``isp`` (router, ISP resolver, censor) —
``internet`` (web servers, authoritative DNS, DoH control resolver, the helper),
built from a scenario file (:mod:`probe.lab.scenario`) that is the ground truth.
Modules: :mod:`~probe.lab.scenario` (loader), :mod:`~probe.lab.topology`
(namespaces, veths, nftables), :mod:`~probe.lab.services` (servers),
:mod:`~probe.lab.run` (build, run the probe, compare, tear down),
:mod:`~probe.lab.censor` and :mod:`~probe.lab.forge` (the middlebox and the MITM forger).
"""
