"""Configuration: one typed object from TOML + environment + flags.

Precedence: command-line flags > environment (``KZPROBE_<SECTION>_<KEY>``) > the
TOML file > defaults. The file is ``--config PATH``, else ``$KZPROBE_CONFIG`` (both must
exist), else the first that exists of ``/etc/kzprobe/config.toml`` and the XDG config
dir's ``kzprobe/config.toml`` (platformdirs). Bad configuration raises
:class:`ConfigError` naming the key; the CLI exits with sysexits ``EX_CONFIG`` (78).

Example::

    [probe]
    asn = "AS9198"              # probe_asn in every measurement
    cc = "KZ"
    network_name = "JSC Kazakhtelecom"
    vantage_id = "almaty-pi-1"
    annotations = { campaign = "fotn-2021" }   # extra df-000 annotations (strings)
    include_ip = false          # true: write the probe's public address as probe_ip (OONI's include_ip);
                                # false: it is scrubbed from every record ("[scrubbed]", probe/vantage.py)

    [run]
    targets = ["fotn-2021-kz.csv"]   # shipped list names or paths
    concurrency = 8
    out = ""                          # "" = the state directory
    retention_days = 90               # delete run files older than this after each run; 0 = keep forever
    time_budget_s = 10200             # worst case a run may take (the unit's 3 h less 10 min); "none" = no limit

    [consent]
    accepted = true                   # the risk notice (systemd/config.example.toml); false = refuse to run

    [dns]
    system = true
    udp_resolvers = ["192.168.1.1"]   # your ISP's resolver, queried directly
    doh_urls = ["https://1.1.1.1/dns-query", "https://8.8.8.8/dns-query"]

    [tls]
    extra_anchors = []                # PEM files of extra trust anchors
    policy = "webpki"                 # or "relaxed" (test CAs only)
    benign_sni = "example.com"

    [http]
    max_body_bytes = 1048576          # at most 64 MiB
    extra_ports = [8080]              # ports a redirect may use besides the input's, 80 and 443
                                      # (numbers; "8080" strings work too)

    [localnet]                        # the vantage's own network: never connected to (probe/localnet.py)
    os = true                         # read its interface subnets and gateways from the OS
    extra = []                        # more ranges to treat as yours (a VPN's, another LAN's)

    [timeouts]
    dns_s = 5.0
    measurement_s = 90.0              # must cover dns_s + dns_listen_s + connect_s + tls_s + 3 × http_s
                                      # (86.5 s by default; a config that cannot is an error naming them)
    control_s = 45.0                  # the helper, retries included; dns_s + control_s <= measurement_s

    [bogons]
    public = []                       # CIDR ranges to treat as public here

    [health]
    canaries = ["www.wikipedia.org:443", "www.google.com:443"]
    ipv6_canaries = ["[2606:4700:4700::1111]:443"]
    resolver_canary = "example.com"   # your resolvers must resolve it; "" = no check

    [helper]                          # the control helper on a VPS (docs/helper-api.md)
    url = "https://vps.example.org:8443"
    token_file = "/etc/kzprobe/helper.token"   # one line; keep it mode 0600

    [geoip]                           # the vantage's network when [probe] does not name it (probe/vantage.py)
    lookup = true                     # ask the helper's whoami for the address, map it with the databases
    doh_trace = true                  # no helper: ask the DoH provider's trace endpoint (Cloudflare's only)
    asn_db = ""                       # MMDB files; "" = the assets dir (kzprobe assets update)
    country_db = ""

    [packets]                         # packet-level evidence for blocked targets (probe/packets/, needs CAP_NET_RAW)
    enabled = true                    # DNS injection test, reset forensics (a few packets per blocked target)
    localise = "manual"               # CenTrace-style censor localisation: manual (runs from a terminal,
                                      # not on the systemd timer) | always | never; once per blocked target per run
    dns_probe_address = ""            # where no resolver listens ("" = the helper's address, when an IP)
    max_ttl = 16                      # most hops probed
    pps = 10                          # packets per second at most, whole run (localisation + DNS TTL copies)
    budget_s = 60                     # longest packet tests of one measurement
    pcap = false                      # keep the packets of each blocked target (kzprobe run --pcap)

    [connect_to]                      # like curl --connect-to (lab and tests)
    "192.0.2.21:443" = "127.0.0.1:8443"
    "*" = "127.0.0.1:9"               # every other endpoint (keeps tests on this machine)
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_args, get_origin
from urllib.parse import urlsplit

import platformdirs

from probe.addresses import Bogons, parse_endpoint, parse_ip, parse_resolver
from probe.bounded import file_kind, read_regular_file
from probe.errors import KzprobeError
from probe.eventloop import EVENT_LOOP_VALUES
from probe.names import HostError, to_alabel

log = logging.getLogger("kzprobe.config")

#: Upper bounds of settings (issue 11: ``http.max_body_bytes = 1e12`` meant 2 GB for one input).
MAX_BODY_BYTES_LIMIT = 64 << 20
#: Body bytes a record may keep (base64): well under the 4 MiB record cap (probe/recordcap.py).
MAX_STORE_BODY_BYTES_LIMIT = 1 << 20
MAX_REDIRECTS_LIMIT = 50
#: Longest per-phase timeout (seconds): one hour.
TIMEOUT_LIMIT_S = 3600.0
#: Longest run deadline (seconds): one week.
RUN_S_LIMIT = 7 * 86400.0
#: Largest config file read (bytes).
MAX_CONFIG_BYTES = 1 << 20

#: The ``KZPROBE_*`` environment variables that are not settings, and where each is read: the
#: closed list (tests/test_config.py checks every ``KZPROBE_`` name in the repo is a setting or
#: here). Every other ``KZPROBE_*`` must be a ``KZPROBE_<SECTION>_<KEY>`` setting: an unknown one
#: is a typo and refused naming it (78). Exporting one of these (``KZPROBE_SHARED`` for ``make
#: test``, ``KZPROBE_EVENT_LOOP=asyncio``) made ``kzprobe run`` refuse to start (break test 24, #3).
OTHER_ENV_VARS: Mapping[str, str] = MappingProxyType({
    "KZPROBE_CONFIG": "the config file, which must exist (this module)",
    "KZPROBE_EVENT_LOOP": "asyncio: use asyncio's event loop, not uvloop (probe/eventloop.py, docs/speed.md)",
    "KZPROBE_SHARED": "the tests' shared data directory (README, tests/conftest.py, bench/ooni_sync.py)",
    "KZPROBE_REQUIRE_LAB": "1: a test that needs the lab or raw packets fails instead of skipping (CI)",
    "KZPROBE_REQUIRE_BROWSER": "1: a test that needs chromium fails instead of skipping (CI)",
    "KZPROBE_UPDATE_GOLDEN": "1: the golden-file tests rewrite their files",
    "KZPROBE_NETGUARD": "off: the tests' off-machine traffic guard is disabled (tests/fixtures/netguard.py)",
})


class ConfigError(KzprobeError, ValueError):
    """Bad configuration. ``key`` is the dotted key (``"run.concurrency"``) or the file;
    ``conflicts_with``: the other keys whose values this one's conflicts with (a
    ``--measurement-timeout`` that leaves no room for ``timeouts.control_s``), so a
    caller that set one of them from a flag can name the flag."""

    def __init__(self, key: str, message: str, *, path: str | Path | None = None,
                 conflicts_with: tuple[str, ...] = ()) -> None:
        super().__init__(f"config: {key}: {message}" + (f" (in {path})" if path is not None else ""))
        self.key = key
        self.message = message
        self.path = path
        self.conflicts_with = conflicts_with


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Per-phase timeouts, in seconds.

    Attributes:
        dns_s: one DNS query (system, UDP or DoH).
        dns_listen_s: after the first UDP reply, keep listening this long for more
            (injected duplicates; FIELD-CASES FC-07 asks for 1-2 s). Bounded by ``dns_s``.
        connect_s: one TCP connect.
        tls_s: one TLS handshake (after connect).
        http_s: one HTTP round trip including reading the (capped) body; per hop.
        measurement_s: whole web test of one input.
        control_s: the full control (the helper) of one input, retries included; must be
            smaller than ``measurement_s`` so a hanging helper fails the control, not the
            whole measurement (issue 11, 4).
        run_s: whole run; ``None`` = no deadline.
    """

    dns_s: float = 5.0
    dns_listen_s: float = 1.5
    connect_s: float = 10.0
    tls_s: float = 10.0
    http_s: float = 20.0
    measurement_s: float = 90.0
    control_s: float = 45.0
    run_s: float | None = None

    def sequential_phases(self) -> tuple[tuple[str, float], ...]:
        """The phases one input may go through one after another, each at its own timeout:
        ``(what, seconds)``. The measurement deadline must cover their sum
        (:meth:`check_deadline`): DNS (the query, then the listening window for injected
        replies), the TCP connect, the TLS handshake, and :data:`SEQUENTIAL_HTTP` HTTP
        exchanges — the fetch, the throughput baseline with a benign SNI, and the re-test of
        a slow target (probe.measure.throughput). The SNI retries run beside each other, and
        the control beside the probe's own steps (checked on its own). Each redirect hop has
        ``http_s`` too: a long chain of slow hops can still meet the deadline, and the record
        then says so (rule ``deadline``)."""
        return (("dns_s", self.dns_s), ("dns_listen_s", self.dns_listen_s), ("connect_s", self.connect_s),
                ("tls_s", self.tls_s), (f"{SEQUENTIAL_HTTP} × http_s", SEQUENTIAL_HTTP * self.http_s))

    def check_deadline(self) -> tuple[str, str] | None:
        """Why ``measurement_s`` cannot cover what it contains, as ``(key, message)``; None when
        it can. Two checks: the sequential phases (:meth:`sequential_phases`), and the
        control, which starts once the name is resolved: ``dns_s`` + the control's deadline.
        The message names the keys and the numbers."""
        phases = self.sequential_phases()
        need = sum(v for _k, v in phases)
        if self.measurement_s + 1e-9 < need:
            parts = " + ".join(f"{k} {v:g}" for k, v in phases)
            return ("timeouts.measurement_s",
                    f"{self.measurement_s:g} s cannot cover the phases one input goes through in sequence: {parts} "
                    f"= {need:g} s (DNS and its listening window, connect, TLS, then the fetch, the throughput "
                    f"baseline and its re-test); raise timeouts.measurement_s to at least {need:g} or lower those "
                    "timeouts")
        ctl = self.dns_s + self.control_deadline_s
        if self.measurement_s + 1e-9 < ctl:
            return ("timeouts.control_s",
                    f"the control starts after DNS and may take its whole deadline: dns_s {self.dns_s:g} + control "
                    f"{self.control_deadline_s:g} (control_s, or 3/4 of measurement_s when control_s is not below "
                    f"it) = {ctl:g} s, more than timeouts.measurement_s {self.measurement_s:g}; lower "
                    "timeouts.control_s or timeouts.dns_s, or raise timeouts.measurement_s")
        return None

    @property
    def control_deadline_s(self) -> float:
        """The control's deadline as used: ``control_s``, or when that is not below the
        measurement deadline (a short ``--measurement-timeout``), three quarters of it."""
        return self.control_s if self.control_s < self.measurement_s else 0.75 * self.measurement_s


DEFAULT_DOH = ("https://1.1.1.1/dns-query", "https://8.8.8.8/dns-query")
#: HTTP exchanges one input can make one after another (the fetch, the throughput baseline,
#: the re-test), each within ``timeouts.http_s`` (:meth:`Timeouts.sequential_phases`).
SEQUENTIAL_HTTP = 3


@dataclass(frozen=True, kw_only=True)
class Settings:
    """All settings. Field names are ``<section>_<key>`` of the TOML file (see module doc).

    ``run_retention_days``: after each run, delete this output directory's run files
    (``<report_id>.jsonl`` + ``.summary.json``) older than this many days; 0 = keep
    forever (:mod:`probe.retention`). ``consent_accepted``: the risk notice of
    ``systemd/config.example.toml``; ``False`` makes ``kzprobe run`` refuse (exit 78),
    ``None`` (no ``[consent]`` key) means it was never asked (a manual run from a
    checkout), ``True`` that the user accepted it. Only a TOML boolean is read as an answer
    (``"yes"`` or ``1`` is a :class:`ConfigError` naming ``consent.accepted``).
    """

    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    probe_network_name: str = ""
    probe_vantage_id: str = ""
    probe_annotations: Mapping[str, str] = field(default_factory=dict)
    probe_include_ip: bool = False
    run_targets: tuple[str, ...] = ("fotn-2021-kz.csv",)
    run_concurrency: int = 8
    run_out: str = ""
    run_fsync: bool = True
    run_retention_days: int = 90
    run_time_budget_s: float | None = 10200.0
    consent_accepted: bool | None = None
    dns_system: bool = True
    dns_udp_resolvers: tuple[str, ...] = ()
    dns_doh_urls: tuple[str, ...] = DEFAULT_DOH
    tls_extra_anchors: tuple[str, ...] = ()
    tls_include_mozilla: bool = True
    tls_policy: str = "webpki"
    tls_benign_sni: str = "example.com"
    http_max_body_bytes: int = 1 << 20
    http_store_body_bytes: int = 16384
    http_max_redirects: int = 10
    http_extra_ports: tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    bogons_public: tuple[str, ...] = ()
    bogons_extra: tuple[str, ...] = ()
    localnet_os: bool = True
    localnet_extra: tuple[str, ...] = ()
    health_canaries: tuple[str, ...] = ("www.wikipedia.org:443", "www.google.com:443")
    health_ipv6_canaries: tuple[str, ...] = ("[2606:4700:4700::1111]:443",)
    health_resolver_canary: str = "example.com"
    helper_url: str = ""
    helper_token_file: str = ""
    geoip_lookup: bool = True
    geoip_doh_trace: bool = True
    geoip_asn_db: str = ""
    geoip_country_db: str = ""
    packets_enabled: bool = True
    packets_localise: str = "manual"
    packets_dns_probe_address: str = ""
    packets_max_ttl: int = 16
    packets_pps: float = 10.0
    packets_budget_s: float = 60.0
    packets_pcap: bool = False
    connect_to: Mapping[str, str] = field(default_factory=dict)
    source: str = "defaults"

    def bogons(self) -> Bogons:
        """The bogon set these settings describe."""
        from probe.addresses import DEFAULT_BOGONS

        return Bogons(bogons=DEFAULT_BOGONS + self.bogons_extra, public=self.bogons_public)


_SECTIONS = ("probe", "run", "dns", "tls", "http", "bogons", "health", "helper", "consent", "localnet", "geoip",
             "packets")


def _fields() -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(Settings)}


def _coerce(key: str, value: Any, typ: Any, *, text: bool = False) -> Any:
    """``value`` of setting ``key`` as ``typ``. ``text``: the value came as text (an environment
    variable, a flag), where a list is written comma-separated and numbers and booleans are
    words; in the TOML file a list is an array, a number a TOML number and a boolean
    ``true``/``false``, and a string there is an error (``udp_resolvers = "1.2.3.4"`` was taken
    for a list, ``concurrency = "8"`` for 8: break test)."""
    typ = eval(typ, {"Mapping": Mapping, "Timeouts": Timeouts}) if isinstance(typ, str) else typ  # noqa: S307
    origin = get_origin(typ)
    if typ is bool or (origin is not None and set(get_args(typ)) == {bool, type(None)}):
        if isinstance(value, bool):
            return value
        if not text:
            raise ConfigError(key, f"expected a TOML boolean: true or false, without quotes, got {value!r}")
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(key, f"expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, str) and not text):
            what = " (a TOML number, without quotes)" if isinstance(value, str) else ""
            raise ConfigError(key, f"expected an integer{what}, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(key, f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) and not text:
            raise ConfigError(key, f"expected a list of strings (a TOML array such as [{value!r}]), "
                                   f"got the string {value!r}")
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f"expected a list of strings, got {value!r}")
        return tuple(value)
    if typ is float or (origin is not None and float in get_args(typ)):
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number of seconds, got {value!r}")
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            if type(None) in get_args(typ):
                return None
        if isinstance(value, str) and not text:
            raise ConfigError(key, f"expected a TOML number of seconds, without quotes, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number of seconds, got {value!r}") from None
        if not math.isfinite(f) or f <= 0:
            raise ConfigError(key, f"must be a finite number > 0, got {value!r}")
        return f
    raise ConfigError(key, f"unsupported setting type {typ}")


def _consent(value: Any, key: str) -> bool:
    """``[consent] accepted``: only a TOML boolean (``true``/``false``, no quotes) counts;
    ``"yes"``, ``1`` or ``"true"`` are errors, so that consent is never read into a typo.
    In the environment (``KZPROBE_CONSENT_ACCEPTED``, always a string) only ``true`` or
    ``false``. Raises :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool):
        return value
    if key.startswith("KZPROBE_") and value in ("true", "false"):
        return value == "true"
    hint = "true or false" if key.startswith("KZPROBE_") else "a TOML boolean: true or false, without quotes"
    raise ConfigError(key, f"must be {hint}, got {value!r}")


def default_config_paths() -> list[Path]:
    """Where a config file is looked for when neither ``--config`` nor ``$KZPROBE_CONFIG``
    names one, in order (the first that exists wins)."""
    paths = []
    paths.append(Path("/etc/kzprobe/config.toml"))
    paths.append(Path(platformdirs.user_config_dir("kzprobe")) / "config.toml")
    return paths


def _default_config_path() -> Path | None:
    """The first of :func:`default_config_paths` that is a file. A path the user may not look
    into (as nobody with ``HOME=/root``: ``~/.config`` under an unreadable home) is taken as
    absent and said at info level (break test F7: it was a PermissionError traceback); an explicit
    ``--config`` that cannot be read is a :class:`ConfigError` naming it (exit 78)."""
    for p in default_config_paths():
        try:
            if p.is_file():
                return p
        except OSError as exc:  # EACCES on a directory above it (is_file passes ENOENT/ENOTDIR only)
            log.info("config: %s cannot be looked at (%s): taken as absent", p, exc.strerror or exc)
    return None


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level: 5,000 "[" crashed the loader
        raise ConfigError(str(path), "not valid TOML: nested too deeply") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    out: dict[str, Any] = {}
    types = _fields()
    tfields = {f.name: f.type for f in dataclasses.fields(Timeouts)}
    for section, body in data.items():
        if not isinstance(body, dict):
            raise ConfigError(section, "expected a [section] table")
        if section == "timeouts":
            for k, v in body.items():
                if k not in tfields:
                    raise ConfigError(f"timeouts.{k}", f"unknown key (known: {', '.join(tfields)})")
                out.setdefault("timeouts", {})[k] = _coerce(f"timeouts.{k}", v, tfields[k])
        elif section == "connect_to":
            cmap = {}
            for k, v in body.items():
                try:
                    if k != "*":
                        parse_endpoint(k)
                    parse_endpoint(v)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"connect_to.{k}", str(exc)) from None
                cmap[k] = v
            out["connect_to"] = cmap
        elif section in _SECTIONS:
            for k, v in body.items():
                name = f"{section}_{k}"
                if name == "probe_annotations":
                    if not isinstance(v, dict) or not all(isinstance(a, str) and isinstance(b, str)
                                                          for a, b in v.items()):
                        raise ConfigError("probe.annotations", f"expected a table of strings, got {v!r}")
                    out[name] = dict(v)
                    continue
                if name == "consent_accepted":
                    out[name] = _consent(v, "consent.accepted")
                    continue
                if name not in types or name in ("timeouts", "connect_to"):
                    known = [n.split("_", 1)[1] for n in types if n.startswith(section + "_")]
                    raise ConfigError(f"{section}.{k}", f"unknown key (known: {', '.join(known)})")
                if name == "http_extra_ports" and isinstance(v, list):  # port numbers, as numbers or strings
                    v = [str(p) if isinstance(p, int) and not isinstance(p, bool) else p for p in v]
                out[name] = _coerce(f"{section}.{k}", v, types[name])
        else:
            raise ConfigError(section, f"unknown section (known: {', '.join(_SECTIONS + ('timeouts', 'connect_to'))})")
    return out


#: Settings the environment cannot set (tables, or not a setting).
_NOT_FROM_ENV = frozenset({"timeouts", "connect_to", "source", "probe_annotations"})


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    types = _fields()
    tfields = {f.name: f.type for f in dataclasses.fields(Timeouts)}
    for var, value in env.items():
        if var == "KZPROBE_EVENT_LOOP" and value.strip().lower() not in EVENT_LOOP_VALUES:
            raise ConfigError(var, f"expected asyncio or uvloop, got {value!r}")
        if not var.startswith("KZPROBE_") or var in OTHER_ENV_VARS:
            continue
        name = var.removeprefix("KZPROBE_").lower()
        if name.startswith("timeouts_") and name.removeprefix("timeouts_") in tfields:
            k = name.removeprefix("timeouts_")
            out.setdefault("timeouts", {})[k] = _coerce(var, value, tfields[k], text=True)
        elif name == "consent_accepted":
            out[name] = _consent(value, var)
        elif name in types and name not in _NOT_FROM_ENV:
            out[name] = _coerce(var, value, types[name], text=True)
        else:
            raise ConfigError(var, "unknown environment setting" + _env_hint(var, types, tfields))
    return out


def _env_hint(var: str, types: Mapping[str, Any], tfields: Mapping[str, Any]) -> str:
    """The hint for a misspelt variable: " (did you mean KZPROBE_RUN_CONCURRENCY?)" for
    KZPROBE_RUN_CONCURENCY; "" when no known name is near."""
    known = [f"KZPROBE_{n.upper()}" for n in types if n not in _NOT_FROM_ENV]
    known += [f"KZPROBE_TIMEOUTS_{k.upper()}" for k in tfields] + list(OTHER_ENV_VARS)
    near = difflib.get_close_matches(var, known, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def load_settings(*, config_path: str | Path | None = None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build :class:`Settings` from file, environment and flag overrides.

    Args:
        config_path: explicit file (must exist); None = look in :func:`default_config_paths`.
        env: environment to read (default ``os.environ``).
        overrides: flag values, by Settings field name (``"run_concurrency"``) or
            ``"timeouts.<key>"``; None values are ignored.

    Raises:
        ConfigError: naming the key, file or variable that is wrong.
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    source = "defaults"
    if config_path is None and env.get("KZPROBE_CONFIG"):
        config_path = env["KZPROBE_CONFIG"]  # named explicitly: it must exist
    path = Path(config_path) if config_path else _default_config_path()
    if path is not None:
        try:
            merged.update(_from_file(path))
        except ConfigError as exc:
            if exc.key == str(path):
                raise
            # a bad key or value in the file names the file too (break test, stop 18)
            raise ConfigError(exc.key, exc.message, path=path) from None
        source = str(path)
    env_vals = _from_env(env)
    tmo = {**merged.pop("timeouts", {}), **env_vals.pop("timeouts", {})}
    merged.update(env_vals)
    types = _fields()
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k.startswith("timeouts."):
            tk = k.split(".", 1)[1]
            tmo[tk] = _coerce(f"--{tk}", v, {f.name: f.type for f in dataclasses.fields(Timeouts)}[tk], text=True)
        elif k in types:
            merged[k] = v if k == "connect_to" else _coerce(f"--{k}", v, types[k], text=True)
        else:
            raise ConfigError(k, "unknown setting")
    merged["timeouts"] = Timeouts(**tmo)
    if "control_s" in tmo and merged["timeouts"].control_s >= merged["timeouts"].measurement_s:
        t = merged["timeouts"]
        raise ConfigError("timeouts.control_s", f"must be smaller than timeouts.measurement_s "
                          f"({t.measurement_s:g} s), got {t.control_s:g}: a hanging helper would otherwise "
                          "cost every measurement its deadline", conflicts_with=("timeouts.measurement_s",))
    s = Settings(**merged, source=source)
    _validate(s)
    bad = s.timeouts.check_deadline()  # after _validate: each timeout is in range
    if bad is not None:
        raise ConfigError(*bad, conflicts_with=("timeouts.measurement_s",))  # each check is against it
    return s


def _validate(s: Settings) -> None:
    if not 0 <= s.run_retention_days <= 36500:
        raise ConfigError("run.retention_days", f"must be between 0 (keep forever) and 36500 days, got {s.run_retention_days}")
    if not 1 <= s.run_concurrency <= 1024:
        raise ConfigError("run.concurrency", f"must be between 1 and 1024, got {s.run_concurrency}")
    if s.packets_localise not in ("manual", "always", "never"):
        raise ConfigError("packets.localise", f"must be 'manual', 'always' or 'never', got {s.packets_localise!r}")
    if not 1 <= s.packets_max_ttl <= 64:
        raise ConfigError("packets.max_ttl", f"must be between 1 and 64, got {s.packets_max_ttl}")
    if s.packets_pps > 50:
        raise ConfigError("packets.pps", f"at most 50 packets per second (a volunteer's uplink), got {s.packets_pps:g}")
    if s.packets_dns_probe_address:
        try:
            ipaddress.IPv4Address(s.packets_dns_probe_address)
        except ValueError:
            raise ConfigError("packets.dns_probe_address",
                              f"expected an IPv4 address, got {s.packets_dns_probe_address!r}") from None
    if s.tls_policy not in ("webpki", "relaxed"):
        raise ConfigError("tls.policy", f"must be 'webpki' or 'relaxed', got {s.tls_policy!r}")
    if not s.probe_asn.startswith("AS") or not s.probe_asn[2:].isdigit():
        raise ConfigError("probe.asn", f"expected the form AS1234, got {s.probe_asn!r}")
    if len(s.probe_cc) != 2 or not s.probe_cc.isalpha() or not s.probe_cc.isupper():
        raise ConfigError("probe.cc", f"expected an ISO 3166 alpha-2 code like KZ, got {s.probe_cc!r}")
    if not s.dns_system and not s.dns_udp_resolvers:
        raise ConfigError("dns.system", "no probe-side resolver: set dns.system = true or list dns.udp_resolvers")
    for url in s.dns_doh_urls:
        if not url.startswith("https://"):
            raise ConfigError("dns.doh_urls", f"a DoH URL must be https:// (RFC 8484), got {url!r}")
    for r in s.dns_udp_resolvers:
        try:
            parse_resolver(r)
        except ValueError as exc:
            raise ConfigError("dns.udp_resolvers", str(exc)) from None
    for name, v, top in (("http.max_body_bytes", s.http_max_body_bytes, MAX_BODY_BYTES_LIMIT),
                         ("http.store_body_bytes", s.http_store_body_bytes, MAX_STORE_BODY_BYTES_LIMIT),
                         ("http.max_redirects", s.http_max_redirects, MAX_REDIRECTS_LIMIT)):
        if not 0 <= v <= top:
            raise ConfigError(name, f"must be between 0 and {top}, got {v}")
    for port in s.http_extra_ports:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("http.extra_ports", f"expected port numbers 1-65535, got {port!r}")
    if s.run_time_budget_s is not None and s.run_time_budget_s > RUN_S_LIMIT:
        raise ConfigError("run.time_budget_s", f"must be at most {RUN_S_LIMIT:g} s, got {s.run_time_budget_s:g}")
    for f in dataclasses.fields(Timeouts):
        v = getattr(s.timeouts, f.name)
        limit_s = RUN_S_LIMIT if f.name == "run_s" else TIMEOUT_LIMIT_S
        if v is not None and v > limit_s:
            raise ConfigError(f"timeouts.{f.name}", f"must be at most {limit_s:g} s, got {v:g}")
    for r in s.localnet_extra:
        try:
            ipaddress.ip_network(r, strict=False)
        except ValueError as exc:
            raise ConfigError("localnet.extra", f"{r!r} is not an IP range in CIDR form ({exc})") from None
    try:
        s.bogons()
    except ValueError as exc:
        raise ConfigError("bogons", str(exc)) from None
    # break test F6: a bad canary crashed check_vantage mid-run (a traceback, a run listed as ordinary)
    for hp in s.health_canaries:
        _check_canary("health.canaries", hp)
    for ep in s.health_ipv6_canaries:
        try:
            ip, _ = parse_endpoint(ep)
        except ValueError as exc:
            raise ConfigError("health.ipv6_canaries", str(exc)) from None
        if ":" not in ip:
            raise ConfigError("health.ipv6_canaries", f"{ep!r} is not an IPv6 endpoint ([IPv6]:PORT)")
    if s.health_resolver_canary:
        try:
            to_alabel(s.health_resolver_canary)
        except HostError as exc:
            raise ConfigError("health.resolver_canary", f"{exc} (\"\" = no check)") from None
    if s.helper_url:
        u = urlsplit(s.helper_url)
        host_ip = parse_ip(u.hostname or "")
        loopback = u.hostname == "localhost" or (host_ip is not None and host_ip.is_loopback)
        if not u.hostname or not (u.scheme == "https" or (u.scheme == "http" and loopback)):
            raise ConfigError("helper.url", f"must be https:// (plain http only on loopback), got {s.helper_url!r}")
    if s.helper_url and not s.helper_token_file:
        raise ConfigError("helper.token_file", "helper.url is set but no token file is given")
    if s.helper_token_file and not Path(s.helper_token_file).is_file():
        raise ConfigError("helper.token_file", f"{s.helper_token_file}: {_not_a_file(s.helper_token_file)}")
    for pem in s.tls_extra_anchors:
        if not Path(pem).is_file():  # break test: /dev/zero was 'no such file'
            raise ConfigError("tls.extra_anchors", f"{pem}: {_not_a_file(pem)}")
        try:
            data = read_regular_file(pem, MAX_CONFIG_BYTES * 4)
        except OSError as exc:
            raise ConfigError("tls.extra_anchors", f"{pem}: cannot read: {exc.strerror or exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise ConfigError("tls.extra_anchors", f"{pem}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)")


def _check_canary(key: str, text: str) -> None:
    """``text`` is ``HOST:PORT`` (a domain name, an IPv4 address or ``[IPv6]``; port 1-65535), as
    :func:`probe.health.check_vantage` reads it; else a :class:`ConfigError` naming ``key``."""
    host, sep, port = text.rpartition(":")
    form = f"{text!r} is not HOST:PORT (a name or an address, a port 1-65535), e.g. 'www.wikipedia.org:443'"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, form)
    if host.startswith("[") or host.endswith("]") or ":" in host:
        if not (host.startswith("[") and host.endswith("]")) or parse_ip(host[1:-1]) is None or "%" in host:
            raise ConfigError(key, f"{form}: bad IPv6 literal {host!r}")
        return
    if parse_ip(host) is not None:
        return
    try:
        to_alabel(host)
    except HostError as exc:
        raise ConfigError(key, f"{form}: {exc}") from None


def state_dir() -> Path:
    """Where runs are written: ``$STATE_DIRECTORY`` (systemd) else the XDG state dir."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path(platformdirs.user_state_dir("kzprobe"))


def _not_a_file(path: str) -> str:
    """Why ``path`` (not a regular file) cannot be read: "no such file" or what it is."""
    try:
        return f"not a regular file ({file_kind(os.stat(path).st_mode)})"
    except OSError:
        return "no such file"
