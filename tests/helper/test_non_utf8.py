"""A URL that is not valid UTF-8 (a lone surrogate in the JSON) is the client's error:
400 naming it, not a 500 (issue 11, 6)."""

from __future__ import annotations

import json

import pytest

from tests.helper.conftest import LabFactory


@pytest.mark.parametrize("url", ["https://example.org/\udcff", "https://ex\udcffample.org/",
                                 "https://example.org/?q=\ud800"])
async def test_a_non_utf8_url_is_400(helper_lab: LabFactory, url: str) -> None:
    lab = await helper_lab(fallback="trap")
    raw = json.dumps({"url": url, "endpoints": []}).encode("ascii")  # "\\udcff" escapes: valid JSON
    a = await lab.post(data=raw)
    assert a.status == 400, a.text
    assert "not valid UTF-8" in a.json["error"]
    assert lab.doh.queries == [] and lab.trap.accepted == 0
