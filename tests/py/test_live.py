"""The harness itself: a release server starts, answers with its API keys, and stops."""

import httpx

from live import KEY, LiveServer


def test_serves_v1_with_a_key_and_refuses_without():
    with LiveServer() as s:
        ok = httpx.get(s.base + "/v1/modules", headers={"x-api-key": KEY})
        assert ok.status_code == 200, ok.text
        denied = httpx.get(s.base + "/v1/modules")
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "unauthorized"
