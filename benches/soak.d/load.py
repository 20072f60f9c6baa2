#!/usr/bin/env python3
"""Load and bookkeeping for benches/soak, with the Python standard library only.

Subcommands:
  write  --port P --db D --threads N --seconds S --out DIR
         N connections insert unique ids into soak_acks through PgGate; an id
         is appended to DIR/acked.N once PgGate answered CommandComplete and
         ReadyForQuery for it; every failure goes to DIR/errors.N as
         "time<TAB>SQLSTATE<TAB>message".
  read   --port P --db D --threads N --seconds S --out DIR
         N connections run reads (SELECT inet_server_port(), count(*) ...)
         through PgGate; failures to DIR/read-errors.N, reads served per
         server port to DIR/read-ports.N.
  verify --port PRIMARY --db D --out DIR
         compares the acknowledged ids with the rows present on the primary
         (connected to directly) and prints one JSON object.
  report --out DIR
         prints the error counts by SQLSTATE and the pgbench summaries.

The PostgreSQL protocol client below speaks v3, simple queries only, trust
authentication only (the soak cluster trusts 127.0.0.1).
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter


class PgError(Exception):
    def __init__(self, sqlstate, message):
        super().__init__(f"[{sqlstate}] {message}")
        self.sqlstate = sqlstate
        self.message = message


class Closed(Exception):
    """The server (or PgGate) closed the connection without an ErrorResponse."""


class Conn:
    def __init__(self, port, db, user="postgres", timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        body = struct.pack("!i", 196608)
        for k, v in (("user", user), ("database", db), ("application_name", "soak")):
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        error = None
        while True:
            tag, payload = self._read()
            if tag == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code != 0:
                    raise PgError("28000", f"authentication method {code} is not supported")
            elif tag == b"E":
                error = self._error(payload)
            elif tag == b"Z":
                break
        if error:
            raise error

    def _recv(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("connection closed by the server")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _read(self):
        header = self._recv(5)
        tag = header[:1]
        length = struct.unpack("!i", header[1:])[0]
        payload = self._recv(length - 4)
        return tag, payload

    @staticmethod
    def _is_fatal(payload):
        return b"SFATAL\0" in payload

    @staticmethod
    def _error(payload):
        fields = {}
        for part in payload.split(b"\0"):
            if part:
                fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
        return PgError(fields.get("C", "?????"), fields.get("M", ""))

    def query(self, sql):
        """Rows (lists of str/None) of the last result; PgError on an error."""
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(data) + 4) + data)
        rows, error = [], None
        while True:
            tag, payload = self._read()
            if tag == b"D":
                count = struct.unpack("!h", payload[:2])[0]
                at, row = 2, []
                for _ in range(count):
                    n = struct.unpack("!i", payload[at:at + 4])[0]
                    at += 4
                    if n < 0:
                        row.append(None)
                    else:
                        row.append(payload[at:at + n].decode())
                        at += n
                rows.append(row)
            elif tag == b"T":
                rows = []
            elif tag == b"E":
                error = self._error(payload)
                if self._is_fatal(payload):
                    raise error
            elif tag == b"Z":
                break
        if error:
            raise error
        return rows

    def close(self):
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        self.sock.close()


def classify(exc):
    if isinstance(exc, PgError):
        return exc.sqlstate, exc.message
    if isinstance(exc, Closed):
        return "closed", str(exc)
    return type(exc).__name__, str(exc)


def writer(args, index, stop_at):
    acked = open(os.path.join(args.out, f"acked.{index}"), "a", buffering=1)
    errors = open(os.path.join(args.out, f"errors.{index}"), "a", buffering=1)
    conn, seq = None, 0
    while time.time() < stop_at:
        if conn is None:
            try:
                conn = Conn(args.port, args.db)
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                code, message = classify(exc)
                errors.write(f"{time.time():.3f}\tconnect:{code}\t{message}\n")
                time.sleep(0.2)
                continue
        seq += 1
        ident = (index + 1) * 10**12 + seq
        try:
            conn.query(f"INSERT INTO soak_acks (id) VALUES ({ident})")
            acked.write(f"{ident}\n")
        except Exception as exc:  # noqa: BLE001
            code, message = classify(exc)
            errors.write(f"{time.time():.3f}\t{code}\t{message}\n")
            if not isinstance(exc, PgError) or code in ("57P01", "08006", "08001", "08P01", "53300"):
                try:
                    conn.sock.close()
                except OSError:
                    pass
                conn = None
            time.sleep(0.05)
        time.sleep(args.pause)
    if conn:
        conn.close()


def reader(args, index, stop_at):
    errors = open(os.path.join(args.out, f"read-errors.{index}"), "a", buffering=1)
    ports = Counter()
    conn = None
    while time.time() < stop_at:
        if conn is None:
            try:
                conn = Conn(args.port, args.db)
            except Exception as exc:  # noqa: BLE001
                code, message = classify(exc)
                errors.write(f"{time.time():.3f}\tconnect:{code}\t{message}\n")
                time.sleep(0.2)
                continue
        try:
            rows = conn.query("SELECT inet_server_port(), (SELECT count(*) FROM pg_class)")
            ports[rows[0][0]] += 1
        except Exception as exc:  # noqa: BLE001
            code, message = classify(exc)
            errors.write(f"{time.time():.3f}\t{code}\t{message}\n")
            if not isinstance(exc, PgError) or code.startswith("08") or code.startswith("57"):
                try:
                    conn.sock.close()
                except OSError:
                    pass
                conn = None
            time.sleep(0.05)
        time.sleep(args.pause)
    if conn:
        conn.close()
    with open(os.path.join(args.out, f"read-ports.{index}"), "w") as f:
        json.dump(ports, f)


def run_threads(args, target):
    stop_at = time.time() + args.seconds
    threads = [threading.Thread(target=target, args=(args, i, stop_at)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def read_lines(out, prefix):
    for name in sorted(os.listdir(out)):
        if name.startswith(prefix + "."):
            with open(os.path.join(out, name), errors="replace") as f:
                yield from f


def verify(args):
    acked = set()
    for line in read_lines(args.out, "acked"):
        line = line.strip()
        if line:
            acked.add(int(line))
    conn = Conn(args.port, args.db)
    present = {int(r[0]) for r in conn.query("SELECT id FROM soak_acks")}
    conn.close()
    missing = sorted(acked - present)
    result = {
        "acknowledged": len(acked),
        "present": len(present),
        "acknowledged_and_present": len(acked & present),
        "missing_acknowledged": len(missing),
        "missing_examples": missing[:10],
        "present_not_acknowledged": len(present - acked),
    }
    print(json.dumps(result))
    return 0 if not missing else 1


def report(args):
    for prefix, what in (("errors", "writer"), ("read-errors", "reader")):
        counts = Counter()
        examples = {}
        for line in read_lines(args.out, prefix):
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) == 3:
                counts[parts[1]] += 1
                examples.setdefault(parts[1], parts[2][:150])
        total = sum(counts.values())
        print(f"  {what} errors by SQLSTATE: {total}" + ("" if total else " (none)"))
        for code, n in counts.most_common():
            print(f"    {code:>16}  {n:6}  e.g. {examples[code]}")
    ports = Counter()
    for name in os.listdir(args.out):
        if name.startswith("read-ports."):
            with open(os.path.join(args.out, name)) as f:
                ports.update(json.load(f))
    if ports:
        print("  reads served by port: " + ", ".join(f"{p}: {n}" for p, n in sorted(ports.items())))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["write", "read", "verify", "report"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--db", default="soak")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--pause", type=float, default=0.005)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "write":
        run_threads(args, writer)
    elif args.command == "read":
        run_threads(args, reader)
    elif args.command == "verify":
        return verify(args)
    else:
        return report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
