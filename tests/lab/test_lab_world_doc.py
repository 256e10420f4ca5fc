"""docs/lab-world.md (issue 12's audit table) says what the scenario files say.

Every `scenario:site` or `scenario:site@vantage` in a table row names a shipped scenario, a site of it
(and a vantage of it), and the verdict column gives that input's truth there: one verdict for every
reference of the row, or one per reference, in order. Every shipped scenario is cited. No root needed.
"""

from __future__ import annotations

import re
from pathlib import Path

from probe.lab.scenario import load_scenario, shipped_scenarios

DOC = Path(__file__).resolve().parents[2] / "docs" / "lab-world.md"
REF = re.compile(r"`([a-z0-9-]+):([^`@\s]+)(?:@([a-z][a-z0-9]*))?`")


def _rows() -> list[tuple[str, list[tuple[str, str, str | None]], list[str]]]:
    """(row text, its references, the verdicts of its third column) for every table row with references."""
    out = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        refs = [(m.group(1), m.group(2), m.group(3)) for m in REF.finditer(cells[1])]
        if refs:
            out.append((line, refs, [w.strip() for w in cells[2].split(",")]))
    return out


def test_every_cited_site_exists_with_the_truth_the_doc_gives() -> None:
    rows = _rows()
    assert len(rows) >= 80, len(rows)
    for line, refs, words in rows:
        assert len(words) in (1, len(refs)), f"{len(refs)} references, verdicts {words}: {line}"
        for i, (scenario, domain, vantage) in enumerate(refs):
            sc = load_scenario(scenario)
            site = sc.site(domain)
            assert site is not None, f"{scenario} has no site {domain}: {line}"
            v = vantage or sc.vantages[0].name
            assert any(x.name == v for x in sc.vantages), f"{scenario} has no vantage {v}: {line}"
            want = words[i] if len(words) > 1 else words[0]
            assert site.truth(v).expect == want, f"{scenario}:{domain}@{v} expects {site.truth(v).expect}, doc {want}"


def test_every_shipped_scenario_is_cited() -> None:
    text = DOC.read_text(encoding="utf-8")
    cited = {m.group(1) for m in REF.finditer(text)} | set(re.findall(r"`([a-z0-9-]+)` \(", text))
    assert set(shipped_scenarios()) <= cited, set(shipped_scenarios()) - cited


#: The 48 cases of OONI's Web Connectivity QA suite: ooni/probe-cli internal/webconnectivityqa/testcase.go,
#: ``AllTestCases`` (the version the doc names "the stored probe-cli version").
QA_CASES = (
    "badSSLWithUnknownAuthorityWithConsistentDNS", "badSSLWithExpiredCertificate", "badSSLWithWrongServerName",
    "badSSLWithUnknownAuthorityWithInconsistentDNS", "cloudflareCAPTCHAWithHTTP", "cloudflareCAPTCHAWithHTTPS",
    "controlFailureWithSuccessfulHTTPWebsite", "controlFailureWithSuccessfulHTTPSWebsite",
    "dnsBlockingAndroidDNSCacheNoData", "dnsBlockingBOGON", "dnsBlockingNXDOMAIN", "dnsHijackingToLocalhostWithHTTP",
    "dnsHijackingToLocalhostWithHTTPS", "dnsHijackingToProxyWithHTTPURL", "dnsHijackingToProxyWithHTTPSURL",
    "ghostDNSBlockingWithHTTP", "ghostDNSBlockingWithHTTPS", "httpBlockingConnectionReset", "httpDiffWithConsistentDNS",
    "httpDiffWithInconsistentDNS", "idnaWithoutCensorshipLowercase", "idnaWithoutCensorshipWithFirstLetterUppercase",
    "largeFileWithHTTP", "largeFileWithHTTPS", "localhostWithHTTP", "localhostWithHTTPS",
    "redirectWithBrokenLocationForHTTP",
    "redirectWithBrokenLocationForHTTPS",
    "redirectWithConsistentDNSAndThenConnectionRefusedForHTTP",
    "redirectWithConsistentDNSAndThenConnectionRefusedForHTTPS",
    "redirectWithConsistentDNSAndThenConnectionResetForHTTP",
    "redirectWithConsistentDNSAndThenConnectionResetForHTTPS",
    "redirectWithConsistentDNSAndThenNXDOMAIN", "redirectWithConsistentDNSAndThenEOFForHTTP",
    "redirectWithConsistentDNSAndThenEOFForHTTPS", "redirectWithConsistentDNSAndThenTimeoutForHTTP",
    "redirectWithConsistentDNSAndThenTimeoutForHTTPS", "successWithHTTP", "successWithHTTPS",
    "tcpBlockingConnectTimeout",
    "tcpBlockingConnectionRefusedWithInconsistentDNS", "throttlingWithHTTP",
    "throttlingWithHTTPS",
    "tlsBlockingConnectionResetWithConsistentDNS", "tlsBlockingConnectionResetWithInconsistentDNS",
    "websiteDownNXDOMAIN", "websiteDownNoAddrs", "websiteDownTCPConnect",
)


def _cited_qa_cases() -> set[str]:
    """The QA cases a shipped scenario file names (a whole word: ``…ForHTTP`` is not ``…ForHTTPS``)."""
    from probe.lab.scenario import SCENARIO_DIR

    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(SCENARIO_DIR.glob("*.toml")))
    return {n for n in QA_CASES if re.search(rf"\b{n}\b", text)}


def test_the_qa_count_and_the_cases_not_expressed_are_the_scenario_files() -> None:
    """The doc's "the scenario files cite N" is the number of AllTestCases names the scenario files cite,
    and its "not expressed" paragraph names, in full, exactly the cases none cites."""
    assert len(QA_CASES) == len(set(QA_CASES)) == 48
    cited = _cited_qa_cases()
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"Of the (\d+) cases in `AllTestCases`[^,]*, the scenario files cite (\d+)\.", text)
    assert m, "the doc no longer says how many QA cases the scenario files cite"
    assert (int(m.group(1)), int(m.group(2))) == (len(QA_CASES), len(cited)), sorted(set(QA_CASES) - cited)
    paragraph = text.split("## QA cases not expressed", 1)[1].split("\n## ", 1)[0]
    named = {n for n in QA_CASES if re.search(rf"`{n}`", paragraph)}
    missing = set(QA_CASES) - cited
    assert named == missing, (sorted(named - missing), sorted(missing - named))
