"""The report's colours, in ONE place: one meaning per colour across every figure and the HTML.

Every outcome (:data:`probe.vocab.OUTCOMES`) and every blocking type (:data:`probe.vocab.BLOCKING_TYPES`)
has exactly one colour here, and no colour has two meanings (``tests/analysis/test_palette.py`` checks
both, and that every figure of :mod:`analysis.plots` draws only with these colours). The colours are
the Okabe–Ito palette (Okabe & Ito, "Color Universal Design", 2008), distinguishable with the common
colour-vision deficiencies; it has eight, and the report needs eleven meanings, so two blocking types
take colours of Paul Tol's colour-blind-safe "muted" scheme (Tol, "Colour Schemes", SRON/EPS/TN/09-002,
2021: wine #882255, olive #999933), and the neutral states are greys.

Meanings:

* outcomes: ``blocked`` vermillion, ``accessible`` bluish green, ``down`` sky blue, ``inconclusive``
  light grey; ``vantage offline`` (an inconclusive measurement made while the vantage point was
  offline) dark grey, drawn hatched;
* blocked *part of the time* (the heatmap's shares): lighter tints of the blocked vermillion — the
  same hue, paler as the share falls (:data:`SHARE_TINTS`);
* blocking types (only ever drawn for blocked measurements): the seven colours of
  :data:`BLOCKING_COLOURS`, none of them an outcome's;
* ``no data`` (not measured): white.

Colour is never the only cue: every figure has a legend or labels.
"""

from __future__ import annotations

from typing import Final

from probe import vocab

#: Okabe–Ito colours (hex), by name.
OKABE_ITO: Final[dict[str, str]] = {
    "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7", "black": "#000000",
}
#: The two colours of Paul Tol's "muted" scheme used where Okabe–Ito has no ninth and tenth colour.
TOL_MUTED: Final[dict[str, str]] = {"wine": "#882255", "olive": "#999933"}

#: Outcome → colour (every :data:`probe.vocab.OUTCOMES` value, and the offline share of inconclusive).
OUTCOME_COLOURS: Final[dict[str, str]] = {
    "blocked": OKABE_ITO["vermillion"],
    "accessible": OKABE_ITO["bluish_green"],
    "down": OKABE_ITO["sky_blue"],
    "inconclusive": "#BBBBBB",
}
OFFLINE_COLOUR: Final = "#555555"
NO_DATA_COLOUR: Final = "#FFFFFF"

#: Blocking type → colour (every :data:`probe.vocab.BLOCKING_TYPES` value; none is an outcome's colour).
BLOCKING_COLOURS: Final[dict[str, str]] = {
    "dns": OKABE_ITO["orange"],
    "tcp_ip": OKABE_ITO["blue"],
    "tls": OKABE_ITO["reddish_purple"],
    "tls_mitm": OKABE_ITO["black"],
    "http-failure": OKABE_ITO["yellow"],
    "http-diff": TOL_MUTED["wine"],
    "throttling": TOL_MUTED["olive"],
}
#: A blocking string this version does not know (a newer probe's): its own grey.
UNKNOWN_BLOCKING_COLOUR: Final = "#8C8C8C"

#: Tints of the blocked colour for "blocked part of the time" (the heatmap's 50–90 % and 10–50 % cells).
SHARE_TINTS: Final[dict[str, str]] = {"mostly": "#E89A66", "partly": "#F6D2BC"}

#: Every colour → its one meaning (a colour used twice would be a KeyError-free silent overwrite: the test
#: builds this from the tables above and checks no colour repeats).
MEANINGS: Final[dict[str, str]] = {
    **{c: f"outcome {o}" for o, c in OUTCOME_COLOURS.items()},
    OFFLINE_COLOUR: "vantage offline",
    NO_DATA_COLOUR: "not measured",
    **{c: f"blocking {b}" for b, c in BLOCKING_COLOURS.items()},
    UNKNOWN_BLOCKING_COLOUR: "blocking of a type this version does not know",
    SHARE_TINTS["mostly"]: "mostly blocked (50–90 %)",
    SHARE_TINTS["partly"]: "partly blocked (10–50 %)",
}

def colour_of(value: str) -> str:
    """The colour of an outcome, a blocking type, ``"vantage offline"`` or ``"no data"``."""
    if value in OUTCOME_COLOURS:
        return OUTCOME_COLOURS[value]
    if value in BLOCKING_COLOURS:
        return BLOCKING_COLOURS[value]
    if value == "vantage offline":
        return OFFLINE_COLOUR
    if value in ("no data", "not measured"):
        return NO_DATA_COLOUR
    return UNKNOWN_BLOCKING_COLOUR


def all_colours() -> tuple[str, ...]:
    """Every data colour of the palette (what a figure may fill with)."""
    return tuple(MEANINGS)


def css() -> str:
    """CSS classes ``.sw-<value>`` (a small swatch) for every outcome and blocking type, so the HTML's tables
    key their words to the figures' colours from this one table."""
    out = [".sw { display: inline-block; width: .8em; height: .8em; border: 1px solid #888; "
           "vertical-align: -.05em; margin-right: .25em; }"]
    for k, c in {**OUTCOME_COLOURS, **BLOCKING_COLOURS, "offline": OFFLINE_COLOUR}.items():
        out.append(f".sw-{k} {{ background: {c}; }}")
    return "\n".join(out)


assert set(OUTCOME_COLOURS) == set(vocab.OUTCOMES), "every outcome has a colour"
assert set(BLOCKING_COLOURS) == set(vocab.BLOCKING_TYPES), "every blocking type has a colour"
