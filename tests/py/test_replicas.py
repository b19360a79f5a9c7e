"""Sessions across two replicas: two release `wasmcage serve` processes with their own
replica ids. A session lives in one replica's memory; its id names that replica, another
replica answers 421 `wrong_replica` naming it, and a client that routes on that error reaches
the session (docs/deploy.md, "Sessions").
"""

from __future__ import annotations

import threading

import httpx

from live import KEY, LiveServer

H = {"x-api-key": KEY}


class ReplicaRouter:
    """The routing docs/deploy.md describes, as a client does it: learn which replica answers
    at which address (every authenticated `/v1` response names its replica in
    `x-wasmcage-replica`), send a request anywhere, and on 421 `wrong_replica` resend it to the
    replica the error names."""

    def __init__(self, bases: list[str]):
        self.clients = [httpx.Client(base_url=b, timeout=120) for b in bases]
        self.by_replica = {c.get("/v1/modules", headers=H).headers["x-wasmcage-replica"]: c
                           for c in self.clients}
        self.redirects = 0

    def request(self, method: str, path: str, *, first: int = 0, **kw) -> httpx.Response:
        r = self.clients[first].request(method, path, headers=H, **kw)
        if r.status_code == 421 and r.json()["error"]["code"] == "wrong_replica":
            owner = r.json()["error"]["replica"]
            assert r.headers["x-wasmcage-session-replica"] == owner
            self.redirects += 1
            r = self.by_replica[owner].request(method, path, headers=H, **kw)
        return r

    def close(self):
        for c in self.clients:
            c.close()


def wait_for_runtimes(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(3000):
            if c.get("/v1/runtimes", headers=H).status_code == 200:
                return
            threading.Event().wait(0.1)
    raise AssertionError(f"runtimes never loaded on {base}")


def test_sessions_route_to_their_replica():
    a = LiveServer('replica_id = "replica-a"', runtimes=True)
    b = LiveServer('replica_id = "replica-b"', runtimes=True)
    starters = [threading.Thread(target=s.start) for s in (a, b)]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    try:
        assert a.base and b.base, "a replica did not start"
        for s in (a, b):
            wait_for_runtimes(s.base)
        ca, cb = httpx.Client(base_url=a.base, timeout=120), httpx.Client(base_url=b.base, timeout=120)

        # A session created on A names A and works there.
        created = ca.post("/v1/sessions", headers=H, json={"language": "python"})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        replica, local = sid.split(".")
        assert replica == "replica-a" and len(local) == 32
        cell = f"/v1/sessions/{sid}/execute"
        r = ca.post(cell, headers=H, json={"code": "x = 41"})
        assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text

        # B does not hold it and says who does, instead of a 404.
        for method, path in (("POST", cell), ("GET", f"/v1/sessions/{sid}"),
                             ("DELETE", f"/v1/sessions/{sid}")):
            r = cb.request(method, path, headers=H, json={"code": "print(x)"} if method == "POST" else None)
            assert r.status_code == 421, (method, r.text)
            assert r.json()["error"]["code"] == "wrong_replica"
            assert r.json()["error"]["replica"] == "replica-a"
            assert r.headers["x-wasmcage-replica"] == "replica-b"
            assert r.headers["x-wasmcage-session-replica"] == "replica-a"
        assert cb.get("/v1/sessions", headers=H).json()["sessions"] == []
        # A's own unknown session is still a 404 on A.
        r = ca.get(f"/v1/sessions/replica-a.{'0' * 32}", headers=H)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_session")

        # A client that routes on the error reaches A from B, with the session's state.
        router = ReplicaRouter([b.base, a.base])
        assert set(router.by_replica) == {"replica-a", "replica-b"}
        r = router.request("POST", cell, json={"code": "x += 1; print(x)"})
        assert r.status_code == 200 and r.json()["stdout"] == "42\n", r.text
        assert r.headers["x-wasmcage-replica"] == "replica-a" and router.redirects == 1

        # And the other way round: a session on B, reached through A.
        created = cb.post("/v1/sessions", headers=H, json={"language": "python"})
        assert created.status_code == 201 and created.json()["id"].startswith("replica-b."), created.text
        sid_b = created.json()["id"]
        r = router.request("POST", f"/v1/sessions/{sid_b}/execute", first=1,
                           json={"code": "print('on b')"})
        assert r.status_code == 200 and r.json()["stdout"] == "on b\n", r.text
        assert router.redirects == 2

        # Ending a session through the router ends it on its replica.
        assert router.request("DELETE", f"/v1/sessions/{sid}").status_code == 204
        r = ca.get(f"/v1/sessions/{sid}", headers=H)
        assert r.status_code == 404
        router.close()
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()
