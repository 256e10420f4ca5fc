"""OONI's other tests the report's claims concern: messaging apps and circumvention tools.

Each test has its own verdict fields (OONI's specs, ooni/spec ``nettests/``); this module reads
them — never re-measures — into one verdict per measurement in the analysis frame's vocabulary
(``blocking`` / ``accessible`` / ``rule`` / ``reason``), for the claims about social media,
messaging and circumvention (B1, B8, C4; the claims' ``ooni_tests`` key).

========================  ==========================================================  =============
test (spec)               blocked when (the test's own keys)                          stands for
========================  ==========================================================  =============
telegram (ts-020)         ``telegram_tcp_blocking`` (every DC unreachable on 80/443),  telegram.org
                          ``telegram_http_blocking`` (no DC answered HTTP), or
                          ``telegram_web_status == "blocked"``
whatsapp (ts-018)         ``whatsapp_endpoints_status``, ``registration_server_status`` whatsapp.com
                          or ``whatsapp_web_status`` is ``"blocked"``
signal (ts-029)           ``signal_backend_status == "blocked"``; test_version 0.2.0   signal.org
                          after 2022-10-19 cannot be trusted (ts-029 "Data analysis
                          considerations", ooni/probe#2344): inconclusive
facebook_messenger        ``facebook_dns_blocking`` or ``facebook_tcp_blocking`` (``-`` messenger.com
(ts-019)                  in the key names up to 0.3.0)
tor (ts-023)              none of the directory authorities (``dir_port`` +            torproject.org
                          ``or_port_dirauth`` targets) accessible; obfs4 bridges are
                          counted in the reason
psiphon (ts-015)          ``failure`` set: bootstrap failed (``bootstrap_time`` 0) or   psiphon.ca
                          the tunnel failed; working when no failure and
                          ``bootstrap_time`` > 0
riseupvpn (ts-026)        ``api_status == "blocked"`` or every transport in            riseup.net
                          ``transport_status`` blocked (the spec's main indicator;
                          single failing gateways are not blocking)
torsf (ts-030)            ``failure`` set (the Snowflake bootstrap timed out)           torproject.org
vanilla_tor (ts-016)      ``success`` false (``tor_progress`` says how far it got)     torproject.org
========================  ==========================================================  =============

A test-level ``failure`` that says the test could not run (``failed_operation`` "top_level",
missing tor binary, ``unknown_failure``) is inconclusive, not blocking. These tests have no
control: a vantage point offline fails them all alike, which is why a claim over them needs
more than one measurement (analysis.compare's rules). The blocking *method* is what the
keys say (tcp_ip for unreachable endpoints, dns for inconsistent answers) or, for
a failed fetch or tunnel, the failure string's stage (:func:`method_of`).

The domains in the last column are only what the report's table shows: analysis.compare
matches these rows to claims by ``test_name`` (a claim's ``ooni_tests``), never by domain,
so a Tor bootstrap never counts as the torproject.org web site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["APP_TESTS", "AppVerdict", "STANDS_FOR", "judge_app", "method_of"]

#: The other OONI tests loaded into the analysis frame, and the site each stands for in tables.
STANDS_FOR: dict[str, str] = {
    "telegram": "telegram.org", "whatsapp": "whatsapp.com", "signal": "signal.org",
    "facebook_messenger": "messenger.com", "tor": "torproject.org", "psiphon": "psiphon.ca",
    "riseupvpn": "riseup.net", "torsf": "torproject.org", "vanilla_tor": "torproject.org",
}
APP_TESTS: tuple[str, ...] = tuple(STANDS_FOR)

#: Failure text that says the test itself could not run (no tor binary, interrupted by the user).
_NOT_RUN = ("tor binary", "executable file not found", "no such file or directory", "interrupted")


@dataclass(frozen=True, kw_only=True)
class AppVerdict:
    """OONI's verdict on one app/circumvention measurement, in the frame's vocabulary.

    Attributes:
        blocking: False, a blocking value (probe.vocab), or None (inconclusive).
        accessible: True / False; None = unknown.
        rule: ``ooni.<test>.<what>`` (e.g. ``ooni.telegram.tcp_blocking``).
        reason: the keys that decided, with their values.
    """

    blocking: str | bool | None
    accessible: bool | None
    rule: str
    reason: str


def method_of(failure: str | None, failed_operation: str | None = None) -> str:
    """The blocking value a failure string points to: dns, tcp_ip, tls, else http-failure."""
    f = (failure or "").lower()
    op = (failed_operation or "").lower()
    if f.startswith("dns_") or "dns_" in op or op == "resolve":
        return "dns"
    if op in ("connect", "tcp_connect") or f in ("connection_refused", "host_unreachable", "network_unreachable"):
        return "tcp_ip"
    if f.startswith("ssl_") or op in ("tls_handshake", "tls"):
        return "tls"
    return "http-failure"


def _keys(tk: dict[str, Any], *names: str) -> str:
    return ", ".join(f"{n}={tk.get(n)!r}" for n in names if n in tk)


def _not_run(tk: dict[str, Any]) -> AppVerdict | None:
    f = tk.get("failure")
    op = tk.get("failed_operation")
    if isinstance(f, str) and (op == "top_level" or any(mark in f.lower() for mark in _NOT_RUN)):
        return AppVerdict(blocking=None, accessible=None, rule="ooni.not_run",
                          reason=f"the test did not run to the end ({f}): nothing to judge")
    return None


def _telegram(tk: dict[str, Any]) -> AppVerdict:
    tcp, http, web = tk.get("telegram_tcp_blocking"), tk.get("telegram_http_blocking"), tk.get("telegram_web_status")
    keys = _keys(tk, "telegram_tcp_blocking", "telegram_http_blocking", "telegram_web_status", "telegram_web_failure")
    if tcp is True:
        return AppVerdict(blocking="tcp_ip", accessible=False, rule="ooni.telegram.tcp_blocking",
                          reason=f"no Telegram access point answered on ports 80 or 443 ({keys})")
    if http is True:
        return AppVerdict(blocking="http-failure", accessible=False, rule="ooni.telegram.http_blocking",
                          reason=f"Telegram's access points took connections but none answered HTTP ({keys})")
    if web == "blocked":
        return AppVerdict(blocking=method_of(tk.get("telegram_web_failure")), accessible=False,
                          rule="ooni.telegram.web_blocked", reason=f"web.telegram.org failed ({keys})")
    if tcp is False and http is False and web in ("ok", None):
        return AppVerdict(blocking=False, accessible=True, rule="ooni.telegram.ok", reason=f"Telegram works ({keys})")
    return AppVerdict(blocking=None, accessible=None, rule="ooni.telegram.unknown", reason=f"no verdict keys ({keys})")


def _whatsapp(tk: dict[str, Any]) -> AppVerdict:
    keys = _keys(tk, "whatsapp_endpoints_status", "registration_server_status", "whatsapp_web_status",
                 "registration_server_failure", "whatsapp_web_failure")
    ep, reg, web = tk.get("whatsapp_endpoints_status"), tk.get("registration_server_status"), tk.get("whatsapp_web_status")
    if ep == "blocked":
        return AppVerdict(blocking="tcp_ip", accessible=False, rule="ooni.whatsapp.endpoints_blocked",
                          reason=f"no WhatsApp endpoint took a connection on 443 or 5222 ({keys})")
    if reg == "blocked":
        return AppVerdict(blocking=method_of(tk.get("registration_server_failure")), accessible=False,
                          rule="ooni.whatsapp.registration_blocked", reason=f"the registration service failed ({keys})")
    if web == "blocked":
        return AppVerdict(blocking=method_of(tk.get("whatsapp_web_failure")), accessible=False,
                          rule="ooni.whatsapp.web_blocked", reason=f"WhatsApp web failed ({keys})")
    if ep == "ok" and reg in ("ok", None) and web in ("ok", None):
        return AppVerdict(blocking=False, accessible=True, rule="ooni.whatsapp.ok", reason=f"WhatsApp works ({keys})")
    return AppVerdict(blocking=None, accessible=None, rule="ooni.whatsapp.unknown", reason=f"no verdict keys ({keys})")


def _signal(tk: dict[str, Any], m: dict[str, Any]) -> AppVerdict:
    keys = _keys(tk, "signal_backend_status", "signal_backend_failure")
    status = tk.get("signal_backend_status")
    when = str(m.get("measurement_start_time") or "")
    if m.get("test_version") == "0.2.0" and when[:10] > "2022-10-19" and status == "blocked":
        return AppVerdict(blocking=None, accessible=None, rule="ooni.signal.untrusted",
                          reason="signal 0.2.0 after 2022-10-19: Signal changed a root CA, so its failures cannot be "
                                 f"trusted (ts-029, ooni/probe#2344) ({keys})")
    if status == "blocked":
        return AppVerdict(blocking=method_of(tk.get("signal_backend_failure")), accessible=False,
                          rule="ooni.signal.backend_blocked", reason=f"a Signal backend failed ({keys})")
    if status == "ok":
        return AppVerdict(blocking=False, accessible=True, rule="ooni.signal.ok", reason=f"Signal works ({keys})")
    return AppVerdict(blocking=None, accessible=None, rule="ooni.signal.unknown", reason=f"no verdict keys ({keys})")


def _messenger(tk: dict[str, Any]) -> AppVerdict:
    dns = tk.get("facebook_dns_blocking", tk.get("facebook-dns-blocking"))
    tcp = tk.get("facebook_tcp_blocking", tk.get("facebook-tcp-blocking"))
    keys = f"facebook_dns_blocking={dns!r}, facebook_tcp_blocking={tcp!r}"
    if dns is True:
        return AppVerdict(blocking="dns", accessible=False, rule="ooni.facebook_messenger.dns_blocking",
                          reason=f"a Messenger endpoint resolved outside Facebook's AS32934 ({keys})")
    if tcp is True:
        return AppVerdict(blocking="tcp_ip", accessible=False, rule="ooni.facebook_messenger.tcp_blocking",
                          reason=f"a Messenger endpoint refused TCP on 443 ({keys})")
    if dns is False and tcp is False:
        return AppVerdict(blocking=False, accessible=True, rule="ooni.facebook_messenger.ok",
                          reason=f"Messenger's endpoints resolve and connect ({keys})")
    return AppVerdict(blocking=None, accessible=None, rule="ooni.facebook_messenger.unknown",
                      reason=f"no verdict keys ({keys})")


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _tor(tk: dict[str, Any]) -> AppVerdict:
    da_total = _int(tk.get("dir_port_total")) + _int(tk.get("or_port_dirauth_total"))
    da_ok = _int(tk.get("dir_port_accessible")) + _int(tk.get("or_port_dirauth_accessible"))
    counts = (f"directory authorities {da_ok}/{da_total} reachable, obfs4 bridges "
              f"{_int(tk.get('obfs4_accessible'))}/{_int(tk.get('obfs4_total'))}, OR-port bridges "
              f"{_int(tk.get('or_port_accessible'))}/{_int(tk.get('or_port_total'))}")
    if da_total == 0:
        return AppVerdict(blocking=None, accessible=None, rule="ooni.tor.no_targets",
                          reason=f"no directory authority was measured ({counts})")
    if da_ok == 0:
        return AppVerdict(blocking="tcp_ip", accessible=False, rule="ooni.tor.dirauth_blocked",
                          reason=f"no Tor directory authority reachable: a client cannot bootstrap ({counts})")
    return AppVerdict(blocking=False, accessible=True, rule="ooni.tor.ok", reason=f"Tor reachable ({counts})")


def _bootstrap(test: str, tk: dict[str, Any]) -> AppVerdict:
    """psiphon and torsf: a tunnel bootstraps (ts-015's table, ts-030)."""
    f = tk.get("failure")
    bt = tk.get("bootstrap_time")
    keys = _keys(tk, "bootstrap_time", "failure")
    if f is None and isinstance(bt, (int, float)) and bt > 0:
        return AppVerdict(blocking=False, accessible=True, rule=f"ooni.{test}.ok", reason=f"bootstrapped ({keys})")
    if isinstance(f, str):
        stage = "bootstrap" if not bt else "use of the tunnel"
        return AppVerdict(blocking=method_of(f, tk.get("failed_operation")), accessible=False,
                          rule=f"ooni.{test}.failed", reason=f"the {stage} failed ({keys})")
    return AppVerdict(blocking=None, accessible=None, rule=f"ooni.{test}.invalid",
                      reason=f"no failure and no bootstrap time: invalid (ts-015) ({keys})")


def _riseup(tk: dict[str, Any]) -> AppVerdict:
    api = tk.get("api_status")
    ts = tk.get("transport_status") if isinstance(tk.get("transport_status"), dict) else {}
    keys = f"api_status={api!r}, api_failure={tk.get('api_failure')!r}, transport_status={ts!r}"
    if api == "blocked":
        return AppVerdict(blocking=method_of(tk.get("api_failure")), accessible=False,
                          rule="ooni.riseupvpn.api_blocked", reason=f"the RiseupVPN API failed ({keys})")
    if ts and all(v == "blocked" for v in ts.values()):
        return AppVerdict(blocking="tcp_ip", accessible=False, rule="ooni.riseupvpn.transports_blocked",
                          reason=f"no gateway took a connection on any transport ({keys})")
    if api == "ok":
        return AppVerdict(blocking=False, accessible=True, rule="ooni.riseupvpn.ok", reason=f"RiseupVPN works ({keys})")
    return AppVerdict(blocking=None, accessible=None, rule="ooni.riseupvpn.unknown", reason=f"no verdict keys ({keys})")


def _vanilla_tor(tk: dict[str, Any]) -> AppVerdict:
    ok = tk.get("success")
    keys = _keys(tk, "success", "tor_progress", "tor_progress_tag", "error", "failure")
    if ok is True:
        return AppVerdict(blocking=False, accessible=True, rule="ooni.vanilla_tor.ok", reason=f"Tor bootstrapped ({keys})")
    if ok is False:
        return AppVerdict(blocking=method_of(tk.get("failure")), accessible=False, rule="ooni.vanilla_tor.failed",
                          reason=f"Tor did not bootstrap ({keys})")
    return AppVerdict(blocking=None, accessible=None, rule="ooni.vanilla_tor.unknown", reason=f"no verdict keys ({keys})")


def judge_app(m: dict[str, Any]) -> AppVerdict:
    """OONI's own verdict on one measurement of :data:`APP_TESTS`, from its test keys.

    Raises:
        ValueError: ``m`` is not a measurement of one of :data:`APP_TESTS`.
    """
    test = m.get("test_name")
    if test not in STANDS_FOR:
        raise ValueError(f"not an app/circumvention test: {test!r} (known: {', '.join(APP_TESTS)})")
    tk = m.get("test_keys")
    if not isinstance(tk, dict):
        return AppVerdict(blocking=None, accessible=None, rule="ooni.no_test_keys", reason="no test_keys")
    not_run = _not_run(tk)
    if not_run is not None:
        return not_run
    if test == "telegram":
        return _telegram(tk)
    if test == "whatsapp":
        return _whatsapp(tk)
    if test == "signal":
        return _signal(tk, m)
    if test == "facebook_messenger":
        return _messenger(tk)
    if test == "tor":
        return _tor(tk)
    if test == "riseupvpn":
        return _riseup(tk)
    if test == "vanilla_tor":
        return _vanilla_tor(tk)
    return _bootstrap(test, tk)
