"""Lab topology: three network namespaces, two veth pairs, routes and nftables rules.

::

    client ns                 isp ns                              internet ns
    10.77.0.2 ──veth── 10.77.0.1 (router, ISP resolver,  10.78.0.1 ──veth── 10.78.0.2
    default via .1             censor; nft: IP actions,          local 198.18.0.0/15 dev lo
                               outage, redirect to the censor)   (every lab address is local:
                               198.18.0.0/15 via 10.78.0.2        one process binds them all;
                                                                  a down site's address has no
                                                                  listener: connection refused)

Names carry a per-run id: namespaces ``kzl-<id>-client|isp|inet``, veths ``kzl<id>c``,
``kzl<id>i`` … so two labs (or a crashed one) never collide. Each lab writes a state
file ``/run/kzprobe-lab/<id>.json`` (namespaces, child pids); :func:`down_all` removes
every lab namespace, veth and process found by that file or by the name prefix.

Addresses in 198.18.0.0/15 (RFC 2544 benchmarking space) stand in for public ones: the
probe is told so through ``bogons.public``. Needs root (CAP_NET_ADMIN), ``ip`` and ``nft``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probe.errors import KzprobeError
from probe.lab.scenario import Scenario, Site

log = logging.getLogger("kzprobe.lab")

#: Name prefix of every lab namespace ("kzl-<id>-…") and veth ("kzl<id>…").
PREFIX = "kzl"
#: Directory of the per-lab state files.
STATE_DIR = Path("/run/kzprobe-lab")

CLIENT_IP, ISP_CLIENT_IP = "10.77.0.2", "10.77.0.1"
ISP_UPLINK_IP, INET_IP = "10.78.0.1", "10.78.0.2"
LAB_NET = "198.18.0.0/15"
#: Lab infrastructure in the "internet" namespace.
AUTH_DNS_IP = "198.18.0.53"
DOH_IP = "198.18.0.54"
CANARY_IP = "198.18.0.10"
HELPER_IP, HELPER_PORT = "198.18.0.80", 8443
#: The address a DNS ``inject`` action races in (nothing serves the site there).
INJECT_IP = "198.18.255.66"
#: The answer of a DNS ``bogon`` action (RFC 1918, as Kazakh resolvers were seen answering).
BOGON_IP = "10.10.34.34"
#: Ports of the censor in the isp namespace (nft redirects :443/:80 of censored addresses there).
CENSOR_TLS_PORT, CENSOR_HTTP_PORT = 10443, 10080
#: First site address; site i gets FIRST_SITE_IP + i (shared addresses reuse the other site's).
FIRST_SITE_IP = ipaddress.IPv4Address("198.18.1.1")


class LabError(KzprobeError, RuntimeError):
    """The lab could not be built (a command failed); the message carries the command and its stderr."""


def site_addresses(sites: Sequence[Site]) -> dict[str, str]:
    """A-label domain → IPv4 address of its web server. Sharing sites get the other's address.

    Raises:
        ValueError: more sites than the lab range holds (about 130,000).
    """
    out: dict[str, str] = {}
    n = 0
    for s in sites:
        if not s.share_ip_with:
            ip = FIRST_SITE_IP + n
            if ip not in ipaddress.ip_network(LAB_NET) or str(ip) == INJECT_IP:
                raise ValueError(f"too many sites for {LAB_NET}: {len(sites)}")
            out[s.domain] = str(ip)
            n += 1
    for s in sites:
        if s.share_ip_with:
            out[s.domain] = out[s.share_ip_with]
    return out


def _set(name: str, ips: Iterable[str]) -> str:
    elems = sorted(set(ips), key=ipaddress.IPv4Address)
    body = f" elements = {{ {', '.join(elems)} }}" if elems else ""
    return f"  set {name} {{ type ipv4_addr;{body} }}\n"


def isp_ruleset(scenario: Scenario, addresses: dict[str, str], *, client_if: str, uplink_if: str) -> str:
    """The nftables ruleset of the isp namespace (``nft -f`` text).

    * forward: ``outage`` drops everything between client and uplink; addresses whose
      site has ``ip = blackhole`` are dropped, ``rst`` answered with a TCP reset,
      ``unreachable`` with ICMP host-unreachable. An address carries the IP action of any
      site on it (collateral blocking).
    * output: ``outage`` also cuts the ISP's own resolver and censor off the uplink.
    * prerouting nat: TCP :443 / :80 to the addresses of sites with a TLS, HTTP or
      throttle action (and no IP action) is redirected to the censor's ports.
    """
    ip_action: dict[str, str] = {}
    for s in scenario.sites:
        if s.ip != "ok":
            ip_action[addresses[s.domain]] = s.ip
    l7 = {addresses[s.domain] for s in scenario.sites if s.censored_l7} - set(ip_action)
    rules = "table ip kzlab {\n"
    rules += _set("blackhole", (a for a, v in ip_action.items() if v == "blackhole"))
    rules += _set("rst", (a for a, v in ip_action.items() if v == "rst"))
    rules += _set("unreach", (a for a, v in ip_action.items() if v == "unreachable"))
    rules += _set("censor", l7)
    rules += "  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
    if scenario.outage:
        rules += f'    iifname "{client_if}" oifname "{uplink_if}" drop\n'
        rules += f'    iifname "{uplink_if}" oifname "{client_if}" drop\n'
    rules += "    ip daddr @blackhole drop\n"
    rules += "    ip daddr @rst meta l4proto tcp reject with tcp reset\n"
    rules += "    ip daddr @rst reject with icmp type port-unreachable\n"
    rules += "    ip daddr @unreach reject with icmp type host-unreachable\n"
    rules += "  }\n"
    rules += "  chain output {\n    type filter hook output priority 0; policy accept;\n"
    if scenario.outage:
        rules += f'    oifname "{uplink_if}" drop\n'
    rules += "  }\n"
    rules += "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
    rules += f"    ip daddr @censor tcp dport 443 redirect to :{CENSOR_TLS_PORT}\n"
    rules += f"    ip daddr @censor tcp dport 80 redirect to :{CENSOR_HTTP_PORT}\n"
    rules += "  }\n}\n"
    return rules


def _run(cmd: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def check_privileges() -> str | None:
    """None when the lab can run here; else a sentence saying why not (not root, no ``ip``/``nft``)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables): run it with sudo"
    for tool in ("ip", "nft"):
        if _run(["which", tool], check=False).returncode != 0:
            return f"the lab needs the '{tool}' command (Debian: apt-get install iproute2 nftables)"
    return None


@dataclass
class Topology:
    """The namespaces of one lab run.

    Attributes:
        lab_id: the per-run suffix (6 hex digits).
        namespaces: ``{"client": ..., "isp": ..., "inet": ...}`` namespace names.
        pids: child process ids started in the namespaces (see :meth:`add_pid`).
        state_file: ``/run/kzprobe-lab/<id>.json``.
    """

    lab_id: str = field(default_factory=lambda: secrets.token_hex(3))
    pids: list[int] = field(default_factory=list)
    up: bool = False

    @property
    def namespaces(self) -> dict[str, str]:
        return {k: f"{PREFIX}-{self.lab_id}-{k}" for k in ("client", "isp", "inet")}

    @property
    def client_if(self) -> str:
        return f"{PREFIX}{self.lab_id}c"

    @property
    def isp_down_if(self) -> str:
        return f"{PREFIX}{self.lab_id}d"

    @property
    def isp_up_if(self) -> str:
        return f"{PREFIX}{self.lab_id}u"

    @property
    def inet_if(self) -> str:
        return f"{PREFIX}{self.lab_id}i"

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.lab_id}.json"

    def exec_prefix(self, role: str) -> list[str]:
        """``["ip", "netns", "exec", <ns>]`` for ``role`` in client, isp, inet."""
        return ["ip", "netns", "exec", self.namespaces[role]]

    def _save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"lab_id": self.lab_id, "namespaces": self.namespaces, "pids": self.pids,
                                   "owner": os.getpid(), "owner_start": _proc_start(os.getpid()),
                                   "created": time.time()}))
        tmp.replace(self.state_file)

    def add_pid(self, pid: int) -> None:
        """Record a child process so that :func:`down_all` can kill it after a crash."""
        self.pids.append(pid)
        self._save()

    def build(self, scenario: Scenario, addresses: dict[str, str]) -> None:
        """Create namespaces, veths, addresses, routes and nftables rules.

        Raises:
            LabError: a command failed (what was made so far stays for :meth:`teardown`).
        """
        ns = self.namespaces
        self._save()  # before anything exists: a crash mid-build is still found by `lab down`
        self.up = True
        for n in ns.values():
            _run(["ip", "netns", "add", n])
        _run(["ip", "link", "add", self.client_if, "netns", ns["client"], "type", "veth",
              "peer", "name", self.isp_down_if, "netns", ns["isp"]])
        _run(["ip", "link", "add", self.isp_up_if, "netns", ns["isp"], "type", "veth",
              "peer", "name", self.inet_if, "netns", ns["inet"]])
        batch = {
            "client": ["link set lo up", f"link set {self.client_if} up",
                       f"addr add {CLIENT_IP}/24 dev {self.client_if}",
                       f"route add default via {ISP_CLIENT_IP}"],
            "isp": ["link set lo up", f"link set {self.isp_down_if} up", f"link set {self.isp_up_if} up",
                    f"addr add {ISP_CLIENT_IP}/24 dev {self.isp_down_if}",
                    f"addr add {ISP_UPLINK_IP}/30 dev {self.isp_up_if}",
                    f"route add {LAB_NET} via {INET_IP}"],
            "inet": ["link set lo up", f"link set {self.inet_if} up",
                     f"addr add {INET_IP}/30 dev {self.inet_if}",
                     f"route add default via {ISP_UPLINK_IP}",
                     f"route add local {LAB_NET} dev lo"],
        }
        for role, cmds in batch.items():
            _run(self.exec_prefix(role) + ["ip", "-batch", "-"], input="\n".join(cmds) + "\n")
        _run(self.exec_prefix("isp") + ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        for role in ("client", "inet"):  # no IPv6 in the lab: the probe must not wait on it
            _run(self.exec_prefix(role) + ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        _run(self.exec_prefix("isp") + ["nft", "-f", "-"],
             input=isp_ruleset(scenario, addresses, client_if=self.isp_down_if, uplink_if=self.isp_up_if))

    def teardown(self) -> None:
        """Kill the recorded children and every process left in the namespaces, delete the
        namespaces (their veths go with them) and the state file. Idempotent."""
        _teardown(self.lab_id, self.namespaces.values(), self.pids)
        self.up = False


def _ns_pids(ns: str) -> list[int]:
    p = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def _kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _teardown(lab_id: str, namespaces: Iterable[str], pids: Iterable[int]) -> None:
    namespaces = list(namespaces)
    victims = set(pids)
    for ns in namespaces:
        victims.update(_ns_pids(ns))
    victims.discard(os.getpid())
    _kill(victims, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_alive(p) for p in victims):
        time.sleep(0.05)
    _kill([p for p in victims if _alive(p)], signal.SIGKILL)
    for ns in namespaces:
        _run(["ip", "netns", "del", ns], check=False)
    for link in lab_links(lab_id):  # a veth left in the root namespace by a build cut short
        _run(["ip", "link", "del", link], check=False)
    shutil.rmtree(STATE_DIR / lab_id, ignore_errors=True)  # the run directory (PKI, config, logs)
    (STATE_DIR / f"{lab_id}.json").unlink(missing_ok=True)


def lab_namespaces() -> list[str]:
    """Names of every lab namespace on this machine (any run)."""
    p = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{PREFIX}-")]


def lab_links(lab_id: str = "") -> list[str]:
    """Lab veths in the root namespace (none unless a build was cut short)."""
    p = _run(["ip", "-o", "link", "show"], check=False)
    out = []
    for line in p.stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(f"{PREFIX}{lab_id}") and len(name) == len(PREFIX) + 7:
                out.append(name)
    return out


def owner_in_use(state: dict[str, object]) -> int | None:
    """The pid of the ``kzprobe lab run|up`` that built the lab of ``state`` (a parsed state
    file) when it is still running (same pid and start time: a recycled pid is not the
    owner) and is not this process; None when the lab is left over."""
    try:
        owner = int(state.get("owner", 0))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    if owner and owner != os.getpid() and _alive(owner) and _proc_start(owner) == state.get("owner_start"):
        return owner
    return None


@dataclass(frozen=True, kw_only=True)
class DownResult:
    """What :func:`down` did.

    Attributes:
        removed: lab ids removed, sorted.
        kept: lab id → pid of its owner, for labs kept because they are in use.
    """

    removed: tuple[str, ...] = ()
    kept: dict[str, int] = field(default_factory=dict)


def down_all(*, force: bool = False) -> list[str]:
    """:func:`down`, returning only the lab ids removed."""
    return list(down(force=force).removed)


def down(*, force: bool = False) -> DownResult:
    """Remove every lab left on this machine by a crash (``kzprobe lab down``): kill the
    processes recorded in the state files and those still in lab namespaces, delete the
    namespaces, stray veths, run directories and state files.

    A lab whose owner (the ``kzprobe lab run|up`` process that built it, recorded in its
    state file) is still alive is in use and kept, unless ``force``; it is listed in
    :attr:`DownResult.kept`. Namespaces with the lab prefix but no state file are always removed."""
    ids: dict[str, tuple[list[str], list[int]]] = {}
    alive: dict[str, int] = {}
    if STATE_DIR.is_dir():
        for f in STATE_DIR.glob("*.json"):
            try:
                st = json.loads(f.read_text())
                ids[st["lab_id"]] = (list(st["namespaces"].values()), [int(p) for p in st.get("pids", [])])
                owner = owner_in_use(st)
                if owner is not None:
                    alive[st["lab_id"]] = owner
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                f.unlink(missing_ok=True)
    keep = {} if force else alive
    for ns in lab_namespaces():
        lab_id = ns.split("-")[1]
        ids.setdefault(lab_id, ([], []))[0].append(ns)
    for link in lab_links():
        ids.setdefault(link[len(PREFIX):len(PREFIX) + 6], ([], []))
    for lab_id in keep:
        ids.pop(lab_id, None)
    for lab_id, (namespaces, pids) in ids.items():
        # only pids still running a lab child (a recycled pid must not be killed)
        pids = [p for p in pids if _is_lab_process(p)]
        _teardown(lab_id, sorted(set(namespaces)), pids)
    return DownResult(removed=tuple(sorted(ids)), kept=dict(sorted(keep.items())))


def _proc_start(pid: int) -> int | None:
    """The process start time in clock ticks since boot (/proc/PID/stat field 22), None if gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _is_lab_process(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"probe.lab" in cmd or b"kzprobe" in cmd or b"probe " in cmd
