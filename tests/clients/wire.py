"""A minimal PostgreSQL v3 wire-protocol client on plain sockets, for the differential tests.

No driver sits between the test and the bytes, so what is compared is exactly what the server (or
pgpilot) sent: every backend message is decoded into a `(name, fields)` tuple, nothing is hidden,
retried or reordered. Every read is bounded: a missing reply becomes a ("TIMEOUT", ...) message in
the transcript (so a hang shows up as a difference, never as a stuck test), a closed socket ("EOF").

Frontend builders return the encoded bytes of one message; `Conn.exchange` sends a batch of them.
"""
import base64
import hashlib
import hmac
import os
import socket
import struct
import time

PROTOCOL_3_0 = 196608
DEFAULT_TIMEOUT = 10.0  # per exchange; long enough for a 2 MB row, short enough to never hang a run
QUIET = 0.3             # a batch with no Sync/Query ends when nothing arrives for this long


class WireError(Exception):
    """The peer broke the protocol (or login failed) in a way a transcript cannot express."""


# --- frontend messages ---------------------------------------------------------------------------------

def _msg(code, body=b""):
    return code + struct.pack("!i", len(body) + 4) + body


def _cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup_message(user, database, params=None):
    body = struct.pack("!i", PROTOCOL_3_0) + _cstr("user") + _cstr(user) + _cstr("database") + _cstr(database)
    for key, value in (params or {}).items():
        body += _cstr(key) + _cstr(value)
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def query(sql):
    return _msg(b"Q", _cstr(sql))


def parse(sql, name="", param_oids=()):
    body = _cstr(name) + _cstr(sql) + struct.pack("!h", len(param_oids))
    return _msg(b"P", body + b"".join(struct.pack("!I", oid) for oid in param_oids))


def _value(v):
    if v is None:
        return struct.pack("!i", -1)
    raw = v.encode() if isinstance(v, str) else bytes(v)
    return struct.pack("!i", len(raw)) + raw


def bind(params=(), stmt="", portal="", param_formats=(), result_formats=()):
    """params: str (text), bytes (sent as is, e.g. binary int4) or None (NULL)."""
    body = _cstr(portal) + _cstr(stmt)
    body += struct.pack("!h", len(param_formats)) + b"".join(struct.pack("!h", f) for f in param_formats)
    body += struct.pack("!h", len(params)) + b"".join(_value(p) for p in params)
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return _msg(b"B", body)


def describe(kind, name=""):
    assert kind in ("S", "P")
    return _msg(b"D", kind.encode() + _cstr(name))


def execute(portal="", max_rows=0):
    return _msg(b"E", _cstr(portal) + struct.pack("!i", max_rows))


def close(kind, name=""):
    assert kind in ("S", "P")
    return _msg(b"C", kind.encode() + _cstr(name))


def sync():
    return _msg(b"S")


def flush():
    return _msg(b"H")


def copy_data(data):
    return _msg(b"d", data.encode() if isinstance(data, str) else data)


def copy_done():
    return _msg(b"c")


def copy_fail(reason):
    return _msg(b"f", _cstr(reason))


def terminate():
    return _msg(b"X")


FRONTEND_NAMES = {b"Q": "Query", b"P": "Parse", b"B": "Bind", b"D": "Describe", b"E": "Execute", b"C": "Close",
                  b"S": "Sync", b"H": "Flush", b"d": "CopyData", b"c": "CopyDone", b"f": "CopyFail",
                  b"X": "Terminate", b"p": "Password"}


def summarize(msg, width=70):
    """One short line naming a frontend message (for transcript headers)."""
    name = FRONTEND_NAMES.get(msg[:1], repr(msg[:1]))
    body = msg[5:]
    if msg[:1] in (b"Q", b"P"):
        text = body.split(b"\0")[1 if msg[:1] == b"P" else 0].decode(errors="replace")
        text = " ".join(text.split())
        return f"{name}({text[:width]!r}{'...' if len(text) > width else ''})"
    if msg[:1] == b"d":
        return f"CopyData({len(body)} bytes)"
    if msg[:1] == b"E":
        portal, rest = body.split(b"\0", 1)
        return f"Execute({portal.decode()!r}, max_rows={struct.unpack('!i', rest[:4])[0]})"
    if msg[:1] in (b"D", b"C"):
        return f"{name}({body[:1].decode()} {body[1:-1].decode()!r})"
    if msg[:1] == b"B":
        portal, stmt = body.split(b"\0")[:2]
        return f"Bind({portal.decode()!r}, {stmt.decode()!r})"
    return name


# --- backend messages ----------------------------------------------------------------------------------

class _Reader:
    """Cursor over one message body."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def int(self, fmt="!i"):
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def cstr(self):
        end = self.data.index(b"\0", self.pos)
        s = self.data[self.pos:end].decode(errors="replace")
        self.pos = end + 1
        return s

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(chunk)

    def rest(self):
        return self.take(len(self.data) - self.pos)


def _fields(r):
    out = {}
    while r.data[r.pos:r.pos + 1] not in (b"\0", b""):
        code = r.take(1).decode()
        out[code] = r.cstr()
    return out


def _auth(r):
    kind = r.int()
    names = {0: "AuthenticationOk", 3: "AuthenticationCleartextPassword", 5: "AuthenticationMD5Password",
             10: "AuthenticationSASL", 11: "AuthenticationSASLContinue", 12: "AuthenticationSASLFinal"}
    name = names.get(kind, f"Authentication{kind}")
    if kind == 10:
        mechs = []
        while r.data[r.pos:r.pos + 1] not in (b"\0", b""):
            mechs.append(r.cstr())
        return name, mechs
    if kind in (5, 11, 12):
        return name, r.rest()
    return name, None


def _row_description(r):
    cols = []
    for _ in range(r.int("!h")):
        cols.append((r.cstr(), r.int("!I"), r.int("!h"), r.int("!I"), r.int("!h"), r.int("!i"), r.int("!h")))
    return "RowDescription", cols


def _data_row(r):
    values = []
    for _ in range(r.int("!h")):
        n = r.int()
        values.append(None if n == -1 else r.take(n))
    return "DataRow", values


def _copy_response(name):
    def decode(r):
        overall = r.int("!b")
        return name, (overall, [r.int("!h") for _ in range(r.int("!h"))])
    return decode


_EMPTY = {b"1": "ParseComplete", b"2": "BindComplete", b"3": "CloseComplete", b"n": "NoData",
          b"s": "PortalSuspended", b"I": "EmptyQueryResponse", b"c": "CopyDone"}
_DECODERS = {
    b"R": _auth,
    b"S": lambda r: ("ParameterStatus", (r.cstr(), r.cstr())),
    b"K": lambda r: ("BackendKeyData", (r.int("!I"), r.int("!I"))),
    b"Z": lambda r: ("ReadyForQuery", r.take(1).decode()),
    b"T": _row_description,
    b"D": _data_row,
    b"C": lambda r: ("CommandComplete", r.cstr()),
    b"E": lambda r: ("ErrorResponse", _fields(r)),
    b"N": lambda r: ("NoticeResponse", _fields(r)),
    b"t": lambda r: ("ParameterDescription", [r.int("!I") for _ in range(r.int("!h"))]),
    b"G": _copy_response("CopyInResponse"),
    b"H": _copy_response("CopyOutResponse"),
    b"W": _copy_response("CopyBothResponse"),
    b"d": lambda r: ("CopyData", r.rest()),
    b"A": lambda r: ("NotificationResponse", (r.int(), r.cstr(), r.cstr())),
    b"v": lambda r: ("NegotiateProtocolVersion", (r.int(), [r.cstr() for _ in range(r.int())])),
    b"V": lambda r: ("FunctionCallResponse", r.rest()),
}


def decode(code, body):
    if code in _EMPTY:
        return _EMPTY[code], None
    decoder = _DECODERS.get(code)
    if decoder is None:
        return f"Unknown({code!r})", bytes(body)
    return decoder(_Reader(body))


# --- SCRAM-SHA-256 (RFC 5802 / 7677, as PostgreSQL uses it: no channel binding, empty user name) ------

class Scram:
    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = None

    def initial(self):
        return ("n,," + self.first_bare).encode()

    def final(self, server_first):
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
        if not attrs["r"].startswith(self.nonce):
            raise WireError(f"SCRAM server nonce does not extend ours: {server_first!r}")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final):
        if server_final.decode().strip("\0") != f"v={self.server_signature}":
            raise WireError(f"SCRAM server signature mismatch: {server_final!r}")


def md5_password(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


# --- connection ----------------------------------------------------------------------------------------

class Conn:
    """One client connection. `startup` holds every message received up to the first ReadyForQuery."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.startup = []
        self.closed = False

    # reading
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError from None
        except ConnectionError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise EOFError
        self.buf += chunk

    def read(self, timeout=DEFAULT_TIMEOUT):
        """The next decoded message, ("TIMEOUT", seconds) after `timeout`, or ("EOF", None)."""
        deadline = time.monotonic() + timeout
        try:
            while len(self.buf) < 5:
                self._fill(deadline)
            code = bytes(self.buf[:1])
            (length,) = struct.unpack_from("!i", self.buf, 1)
            if length < 4:
                raise WireError(f"bad length {length} for message {code!r}")
            while len(self.buf) < 1 + length:
                self._fill(deadline)
        except TimeoutError:
            return "TIMEOUT", timeout
        except EOFError:
            return "EOF", None
        body = bytes(self.buf[5:1 + length])
        del self.buf[:1 + length]
        return decode(code, body)

    def send(self, *msgs):
        try:
            self.sock.sendall(b"".join(msgs))
        except OSError as exc:
            self.closed = True
            raise WireError(f"send failed: {exc!r}") from exc

    def exchange(self, msgs, until=None, timeout=DEFAULT_TIMEOUT):
        """Sends `msgs` and returns the replies.

        until=None: read until one ReadyForQuery per Query/Sync sent; a batch with neither (Flush)
        is read until nothing arrives for QUIET seconds. until=int: that many ReadyForQuery.
        until=str of message names separated by '|': stop after the first message with one of them
        (e.g. "CopyInResponse|ErrorResponse"). A TIMEOUT or EOF always ends the read."""
        self.send(*msgs)
        if until is None:
            until = sum(1 for m in msgs if m[:1] in (b"Q", b"S"))
        stop_names = set(until.split("|")) if isinstance(until, str) else set()
        want_rfq = until if isinstance(until, int) else None
        out, deadline = [], time.monotonic() + timeout
        while True:
            if want_rfq == 0:
                msg = self.read(QUIET)
                if msg[0] == "TIMEOUT":
                    return out
            else:
                msg = self.read(max(0.0, deadline - time.monotonic()))
            out.append(msg)
            if msg[0] in ("TIMEOUT", "EOF") or msg[0] in stop_names:
                return out
            if msg[0] == "ReadyForQuery" and want_rfq:
                want_rfq -= 1
                if want_rfq == 0:
                    return out
            if want_rfq == 0 and time.monotonic() > deadline:
                return out

    def terminate(self, timeout=2.0):
        """Sends Terminate and returns whatever arrives before the peer closes (normally nothing)."""
        out = []
        if not self.closed:
            try:
                self.send(terminate())
            except WireError:
                return out
            deadline = time.monotonic() + timeout
            while True:
                msg = self.read(max(0.0, deadline - time.monotonic()))
                if msg[0] == "EOF":
                    break
                out.append(msg)
                if msg[0] == "TIMEOUT":
                    break
        self.sock.close()
        self.closed = True
        return out

    def _authenticate(self, msg, user, password):
        name, data = msg
        if name == "AuthenticationCleartextPassword":
            self.send(_msg(b"p", _cstr(password)))
        elif name == "AuthenticationMD5Password":
            self.send(_msg(b"p", _cstr(md5_password(user, password, data))))
        elif name == "AuthenticationSASL":
            if "SCRAM-SHA-256" not in data:
                raise WireError(f"no SCRAM-SHA-256 among {data}")
            self.scram = Scram(password)
            first = self.scram.initial()
            self.send(_msg(b"p", _cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
        elif name == "AuthenticationSASLContinue":
            self.send(_msg(b"p", self.scram.final(data)))
        elif name == "AuthenticationSASLFinal":
            self.scram.verify(data)


def connect(host, port, user, database, password=None, params=None, timeout=DEFAULT_TIMEOUT):
    """Opens a connection and logs in; returns the Conn with `.startup` = the messages received up to and
    including the first ReadyForQuery (or the ErrorResponse/EOF/TIMEOUT that ended the login)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(sock)
    conn.send(startup_message(user, database, params))
    deadline = time.monotonic() + timeout
    while True:
        msg = conn.read(max(0.0, deadline - time.monotonic()))
        conn.startup.append(msg)
        if msg[0] in ("ReadyForQuery", "ErrorResponse", "TIMEOUT", "EOF"):
            return conn
        if msg[0].startswith("Authentication") and msg[0] != "AuthenticationOk":
            if password is None:
                raise WireError(f"{msg[0]} asked but no password given")
            conn._authenticate(msg, user, password)


def simple(conn, sql):
    """Runs one simple Query and returns its rows as lists of str/None; raises on ErrorResponse."""
    rows = []
    for name, fields in conn.exchange([query(sql)]):
        if name in ("ErrorResponse", "TIMEOUT", "EOF"):
            raise WireError(f"{sql!r}: {name} {fields}")
        if name == "DataRow":
            rows.append([None if v is None else v.decode() for v in fields])
    return rows
