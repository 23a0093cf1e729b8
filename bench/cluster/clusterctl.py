#!/usr/bin/env python3
"""Helpers for bench/cluster/compare.sh (standard library only).

  clusterctl.py leader SYSTEM URL...       prints the index (0-based) of the
                                           URL whose node is the leader, or
                                           exits 1 if none is
  clusterctl.py healthy SYSTEM URL...      exits 0 when every node answers
                                           (etcd /health true, bitraft
                                           /status 200) and one is the leader
  clusterctl.py load SYSTEM URL NKEYS      writes keys 0..NKEYS-1 (16-byte
                                           keys, 100-byte values) with 16
                                           concurrent clients
  clusterctl.py check SYSTEM URL           prints what a get of key 500 and a
                                           range from key 500 (limit 100)
                                           return, to check the workloads
  clusterctl.py failover SYSTEM PID URL... kill -9 PID (the leader), then
                                           writes through every URL (the
                                           survivors), a fresh write each
                                           10 ms, until one succeeds; prints
                                           the seconds from the kill to that
                                           first success ("none" after 30 s)

SYSTEM is etcd (JSON gateway, /v3/...) or bitraft (/kv/..., /status).
"""
import base64
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse

VALUE = b"v" * 100


def key(i):
    return b"bench:%010d" % i


def hostport(url):
    u = urllib.parse.urlparse(url)
    return u.hostname, u.port


def request(conn, method, path, body=None):
    conn.request(method, path, body=body)
    r = conn.getresponse()
    return r.status, r.getheaders(), r.read()


def put(system, conn, k):
    """One write; returns (ok, redirect location or None)."""
    if system == "etcd":
        body = json.dumps({"key": base64.b64encode(k).decode(),
                           "value": base64.b64encode(VALUE).decode()})
        st, _, data = request(conn, "POST", "/v3/kv/put", body)
        return st == 200 and b'"header"' in data, None
    st, hdrs, _ = request(conn, "PUT", "/kv/" + k.decode(), VALUE)
    loc = dict((h.lower(), v) for h, v in hdrs).get("location")
    return 200 <= st < 300, (loc if st in (301, 302, 307, 308) else None)


def is_leader(system, url):
    h, p = hostport(url)
    c = http.client.HTTPConnection(h, p, timeout=1)
    try:
        if system == "etcd":
            st, _, data = request(c, "POST", "/v3/maintenance/status", "{}")
            s = json.loads(data)
            return st == 200 and s.get("leader") == s["header"]["member_id"]
        st, _, data = request(c, "GET", "/status")
        s = json.loads(data)
        s = s.get("raft", s)  # role at the top or under "raft"
        return st == 200 and s.get("role") == "leader"
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return False
    finally:
        c.close()


def cmd_leader(system, urls):
    for i, u in enumerate(urls):
        if is_leader(system, u):
            print(i)
            return 0
    return 1


def answers(system, url):
    h, p = hostport(url)
    c = http.client.HTTPConnection(h, p, timeout=1)
    try:
        if system == "etcd":
            st, _, data = request(c, "GET", "/health")
            return st == 200 and b'"health":"true"' in data
        st, _, _ = request(c, "GET", "/status")
        return st == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        c.close()


def cmd_healthy(system, urls):
    if not all(answers(system, u) for u in urls):
        return 1
    return 0 if any(is_leader(system, u) for u in urls) else 1


def cmd_load(system, url, nkeys):
    nkeys = int(nkeys)
    errors = []

    def worker(start):
        h, p = hostport(url)
        c = http.client.HTTPConnection(h, p, timeout=10)
        for i in range(start, nkeys, 16):
            try:
                ok, _ = put(system, c, key(i))
            except (OSError, http.client.HTTPException):
                c.close()
                c = http.client.HTTPConnection(h, p, timeout=10)
                ok = False
            if not ok:
                errors.append(i)

    ts = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        print("load: %d writes failed" % len(errors), file=sys.stderr)
        return 1
    return 0


def cmd_check(system, url):
    h, p = hostport(url)
    c = http.client.HTTPConnection(h, p, timeout=5)
    if system == "etcd":
        k = base64.b64encode(key(500)).decode()
        st, _, data = request(c, "POST", "/v3/kv/range", json.dumps({"key": k}))
        kvs = json.loads(data).get("kvs", [])
        glen = len(base64.b64decode(kvs[0]["value"])) if kvs else -1
        st2, _, data = request(c, "POST", "/v3/kv/range", json.dumps(
            {"key": k, "range_end": base64.b64encode(b"bench;").decode(), "limit": 100}))
        n = len(json.loads(data).get("kvs", []))
    else:
        st, _, data = request(c, "GET", "/kv/" + key(500).decode())
        glen = len(data) if st == 200 else -1
        st2, _, data = request(c, "GET", "/kv?start=" + key(500).decode() + "&limit=100")
        # NDJSON, one line per key, then {"next":...} when the limit cut it
        n = len([ln for ln in data.splitlines() if ln.strip() and not ln.startswith(b'{"next"')])
    print("get: status %d, %d-byte value; range: status %d, %d keys" % (st, glen, st2, n))
    return 0 if glen == len(VALUE) and n == 100 else 1


def cmd_failover(system, pid, urls):
    """Every 10 ms, a fresh write to each survivor (each on its own
    connection, up to 400 in flight): a write stuck on the dead leader does
    not hold back the measurement, which resolves to ~10 ms."""
    done = threading.Event()
    lock = threading.Lock()
    result = []
    slots = threading.BoundedSemaphore(400)

    def attempt(url, k):
        h, p = hostport(url)
        c = http.client.HTTPConnection(h, p, timeout=10)
        try:
            ok, loc = put(system, c, k)
            if not ok and loc:
                # A follower names the leader: one try there.
                c.close()
                lh, lp = hostport(loc)
                c = http.client.HTTPConnection(lh, lp, timeout=10)
                ok, _ = put(system, c, k)
            if ok:
                with lock:
                    result.append(time.monotonic() - t0)
                done.set()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            c.close()
            slots.release()

    os.kill(int(pid), signal.SIGKILL)
    t0 = time.monotonic()
    n = 0
    while not done.is_set() and time.monotonic() - t0 < 30:
        for i, u in enumerate(urls):
            if slots.acquire(timeout=0.01):
                n += 1
                threading.Thread(target=attempt, args=(u, b"fail:%09d" % n), daemon=True).start()
        done.wait(0.01)
    with lock:
        print("%.3f" % min(result) if result else "none")
    return 0


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, system, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "leader":
        return cmd_leader(system, rest)
    if cmd == "healthy":
        return cmd_healthy(system, rest)
    if cmd == "load":
        return cmd_load(system, *rest)
    if cmd == "check":
        return cmd_check(system, rest[0])
    if cmd == "failover":
        return cmd_failover(system, rest[0], rest[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
