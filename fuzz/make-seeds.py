#!/usr/bin/env python3
"""Regenerate fuzz/seeds/<target>/ from the real dockerd captures in tests/data.

Usage: fuzz/make-seeds.py            (from anywhere; rewrites fuzz/seeds/)

Each seed starts with the control bytes its target reads first (see the
comment at the top of each fuzz_targets/*.rs); the rest comes from the
captures:
- response:  whole *.http files (no synthesized head), and the log bodies
             de-chunked behind a head the target chunk-encodes itself;
- chunked:   the bodies after the head of every chunked capture;
- frame:     the de-chunked bodies of the non-TTY logs captures;
- timestamp: timestamps found in the captures, and a few other forms;
- lines:     TTY output and frame payloads (message text);
- dns:       hand-built DNS answers (no capture: see dns_seeds());
- sink_response: hand-built answers as Loki and proxies in front of it
             send them (see sink_response_seeds()).
"""

import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SEEDS = ROOT / "fuzz" / "seeds"


def split_head(raw):
    i = raw.index(b"\r\n\r\n") + 4
    return raw[:i], raw[i:]


def header(head, name):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def dechunk(body):
    """Decode a chunked body; returns the data (stops at the last chunk or
    where the capture was cut)."""
    out = bytearray()
    i = 0
    while i < len(body):
        j = body.find(b"\n", i)
        if j < 0:
            break
        size = int(body[i:j].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += body[j + 1 : j + 1 + size]
        i = j + 1 + size + 2
    return bytes(out)


def frames(body):
    """The frame payloads of a multiplexed body, or None if it is not one."""
    out = []
    i = 0
    while i < len(body):
        if len(body) - i < 8 or body[i] > 3:
            return None
        n = int.from_bytes(body[i + 4 : i + 8], "big")
        if len(body) - i - 8 < n:
            return None
        out.append((body[i], body[i + 8 : i + 8 + n]))
        i += 8 + n
    return out


def u16(v):
    return bytes([v & 0xFF, v >> 8])


def rr(owner, rtype, ttl, data):
    """A class IN resource record; `owner` is wire bytes (maybe a pointer)."""
    return owner + rtype.to_bytes(2, "big") + b"\x00\x01" + ttl.to_bytes(4, "big") + len(data).to_bytes(2, "big") + data


def dns_seeds():
    """Seeds for the dns target: [mode, flags_hi, flags_lo, an, ns, ar,
    family, cut] + bytes. In mode 1 the target writes the header and the
    lookup's question (loki.example, at offset 12, so "example" is at 17)
    and the bytes are the records, starting at offset 30."""
    q = 0xC00C.to_bytes(2, "big")
    a = lambda ip: bytes(ip)
    v6 = bytes([0x20, 0x01, 0x0D, 0xB8] + [0] * 11 + [1])
    out = {}
    out["a-records"] = bytes([1, 0x81, 0x80, 2, 0, 0, 1, 5]) + rr(q, 1, 300, a([10, 0, 0, 1])) + rr(q, 1, 60, a([10, 0, 0, 2]))
    # loki.example CNAME lb.example (lb at 42), lb.example A and AAAA.
    chain = rr(q, 5, 30, b"\x02lb\xc0\x11")
    chain += rr(b"\xc0\x2a", 1, 120, a([10, 0, 0, 9])) + rr(b"\xc0\x2a", 28, 120, v6)
    out["cname-chain"] = bytes([1, 0x81, 0x80, 3, 0, 0, 0, 40]) + chain
    out["aaaa"] = bytes([1, 0x81, 0x80, 1, 0, 0, 2, 0]) + rr(q, 28, 5, v6)
    out["search"] = bytes([3, 0x81, 0x80, 1, 0, 0, 1, 2]) + rr(q, 1, 5, a([10, 0, 0, 3]))
    out["nxdomain"] = bytes([1, 0x81, 0x83, 0, 0, 0, 0, 0])
    out["servfail"] = bytes([1, 0x81, 0x82, 0, 0, 0, 1, 0])
    # TC: the lookup asks again over TCP; the same records then answer.
    out["truncated"] = bytes([1, 0x83, 0x80, 1, 0, 0, 1, 9]) + rr(q, 1, 5, a([10, 0, 0, 4]))
    out["pointer-loop"] = bytes([1, 0x81, 0x80, 1, 0, 0, 1, 0]) + rr(b"\xc0\x1e", 1, 5, a([1, 2, 3, 4]))
    # A whole response (mode 0): answer, authority NS, additional OPT.
    whole = b"\x00\x00\x81\x80\x00\x01\x00\x01\x00\x01\x00\x01"
    whole += b"\x04loki\x07example\x00\x00\x01\x00\x01"
    whole += rr(q, 1, 300, a([10, 0, 0, 5]))
    whole += rr(b"\xc0\x11", 2, 300, b"\x02ns\xc0\x11")
    whole += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    out["whole-response"] = bytes([0, 0, 0, 0, 0, 0, 1, 3]) + whole
    return out


def sink_response_seeds():
    """Seeds for the sink_response target: [head, eof, nsplit, 3 x u16,
    chunk] + bytes. head % 6 == 0: the bytes are the whole answer, as Loki
    3.x (and nginx in front of it) write them; other heads are written by
    the target (see its top comment) and the bytes are the body."""
    date = b"Date: Fri, 27 Nov 2026 19:48:22 GMT\r\n"
    text = b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"

    def loki(status, body, extra=b""):
        return (
            b"HTTP/1.1 " + status + b"\r\n" + text + date + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    too_old = b"entry for stream '{container=\"web\", host=\"edge-1\"}' has timestamp too old: 2026-11-01T00:00:00Z, oldest acceptable timestamp is: 2026-11-20T19:48:22Z\n"
    rate = b"Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '1000' lines totaling '1048576' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased\n"
    html = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ctl = lambda head, eof, n, a, b, c, chunk: bytes([head, eof, n]) + u16(a) + u16(b) + u16(c) + bytes([chunk])
    out = {}
    out["loki-204"] = ctl(0, 0, 0, 20, 0, 0, 0) + b"HTTP/1.1 204 No Content\r\n" + date + b"\r\n"
    out["loki-400-too-old"] = ctl(0, 0, 1, 30, 90, 0, 0) + loki(b"400 Bad Request", too_old)
    out["loki-429"] = ctl(0, 0, 2, 7, 60, 200, 0) + loki(b"429 Too Many Requests", rate, b"Retry-After: 10\r\n")
    out["loki-401"] = ctl(0, 1, 0, 50, 0, 0, 0) + loki(b"401 Unauthorized", b"no org id\n")
    out["loki-413"] = ctl(0, 0, 0, 3, 0, 0, 0) + loki(b"413 Request Entity Too Large", b"request too large\n", b"Connection: close\r\n")
    out["nginx-502-close"] = ctl(0, 1, 1, 40, 120, 0, 0) + b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\n" + date + b"Connection: close\r\n\r\n" + html
    out["continue-then-204"] = ctl(0, 0, 0, 25, 0, 0, 0) + b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    out["503-retry-date-chunked"] = ctl(0, 0, 2, 80, 100, 110, 0) + (
        b"HTTP/1.1 503 Service Unavailable\r\n" + date
        + b"Retry-After: Fri, 27 Nov 2026 19:49:22 GMT\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"9;ext=1\r\nunhealthy\r\n1\r\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    out["two-answers"] = ctl(0, 0, 0, 27, 0, 0, 0) + b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    # Heads written by the target, the bytes being the body.
    out["target-429-chunked"] = ctl(2, 0, 1, 33, 0, 0, 15) + rate
    out["target-400-exact"] = ctl(3, 0, 0, 60, 0, 0, 0) + too_old
    out["target-400-short"] = ctl(3 | 8, 1, 0, 60, 0, 0, 0) + too_old
    out["target-100-500-close"] = ctl(4, 1, 2, 10, 40, 45, 0) + "caf\u00e9 \u2603 ".encode() * 120
    out["target-http10"] = ctl(5, 0, 0, 5, 0, 0, 0) + b"ok"
    return out


def main():
    captures = sorted(DATA.glob("*.http"))
    if not captures:
        sys.exit(f"no captures in {DATA}")
    seeds = {t: {} for t in ("response", "chunked", "frame", "timestamp", "lines")}
    seeds["dns"] = dns_seeds()
    seeds["sink_response"] = sink_response_seeds()
    timestamps = set()

    for path in captures:
        name = path.stem
        raw = path.read_bytes()
        head, body = split_head(raw)
        chunked = (header(head, b"transfer-encoding") or b"").lower() == b"chunked"
        data = dechunk(body) if chunked else body
        status = head.split(b" ")[1]
        fr = frames(data) if status == b"200" and chunked else None
        json_body = data[:1] in (b"{", b"[")
        tty = status == b"200" and chunked and fr is None and not json_body and data != b""
        timestamps.update(re.findall(rb"\d{4}-\d\d-\d\dT[0-9:.]+Z", data))

        # response: [head, flags, max_line, raw_partial, chunk, nsplit, 3 x u16]
        # flags: detect timestamps, framing from Content-Type, raw for TTY.
        flags = 0x01 | 0x08 | (0x04 if tty else 0)
        cuts = u16(len(raw) // 3) + u16(len(raw) // 2) + u16(len(raw) - 7)
        seeds["response"][name] = bytes([6, flags, 0xFF, 0xFF, 0x40, 2]) + cuts + raw
        if name in ("interleaved", "tty", "exited-no-newline"):
            # Small caps: lines truncated, TTY partials every 16 bytes.
            seeds["response"][name + "-small-caps"] = (
                bytes([6, flags, 15, 15, 0x40, 2]) + cuts + raw
            )
        if (fr is not None or tty) and len(data) < 4096:
            # The target chunk-encodes the body behind dockerd's head.
            seeds["response"][name + "-rechunked"] = (
                bytes([4, flags, 0xFF, 0xFF, 6, 1]) + u16(9) + u16(31) + u16(0) + data
            )

        # chunked: [mode even, nsplit, 3 x u16] + the body after the head.
        if chunked and (len(body) < 20000 or name == "long-line"):
            seeds["chunked"][name] = bytes([0, 0]) + u16(3) + u16(0) + u16(0) + body

        # frame: [cap, split u16] + the de-chunked body of non-TTY logs.
        if fr is not None:
            seeds["frame"][name] = bytes([0xFF]) + u16(len(data) // 2) + data
            if name == "interleaved":
                seeds["frame"][name + "-cap-40"] = bytes([20]) + u16(50) + data

        # lines: [cap, flags, nctl, ctl...] + message text.
        if tty and len(data) < 4096:
            seeds["lines"][name] = bytes([11, 1, 3, 5, 0, 17]) + data
        elif fr and len(data) < 4096:
            text = b"".join(p for _, p in fr)
            seeds["lines"][name] = bytes([15, 0, 2, 7, 3]) + text

    # Encode mode of the chunked target: [1, nsplit, 3 x u16, flags, nctl, ctl...]
    seeds["chunked"]["encode"] = (
        bytes([1, 1]) + u16(5) + u16(40) + u16(0)
        + bytes([0x93, 4, 0x12, 0x35, 0xC8, 0x07])
        + b"line 01 stdout\nline 02 stderr\n"
    )

    for i, ts in enumerate(sorted(timestamps)[:6]):
        seeds["timestamp"][f"capture-{i}"] = ts
    for i, ts in enumerate(
        [
            b"1970-01-01T00:00:00Z",
            b"2026-11-27T19:48:22.5+02:00",
            b"1969-12-31t22:30:00.000001-01:30",
            b"2262-04-11T23:47:16.854775807Z",
            b"1677-09-21T00:12:43.145224192Z",
        ]
    ):
        seeds["timestamp"][f"form-{i}"] = ts

    # Lines of one date: the second and third take timestamp::Parser's
    # cached-date fast path.
    caps = sorted(timestamps)
    if len(caps) >= 2:
        seeds["timestamp"]["same-date"] = b"\n".join([caps[0], caps[1], caps[1][:20] + b"000000001Z"])

    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    for target, files in seeds.items():
        d = SEEDS / target
        d.mkdir(parents=True)
        for name, content in files.items():
            (d / name).write_bytes(content)
        print(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main()
