"""A fault-injecting TCP relay for the fault tests: pgpilot's upstream points at it, it forwards to the real
PostgreSQL, and the test switches what the network does:

  pass       forward both ways
  stall      keep every connection open and forward nothing (a hung server, a full buffer); new connections are
             accepted and stall too; bytes wait and flow again on `pass`
  blackhole  as stall, but what arrives is thrown away (a network that lost the path: nothing ever arrives)
  reset      close every connection with RST (SO_LINGER 0); new connections are reset at once

The kernel still ACKs what the relay's sockets receive, so TCP_USER_TIMEOUT and keepalive (which need a peer that
stops ACKing) are not exercised here; query_timeout_ms and connect_timeout_ms are.
"""
import select
import socket
import struct
import threading


class FaultRelay:
    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.lock = threading.Lock()
        self.pairs = []  # [client_sock, server_sock, pending c->s bytes, pending s->c bytes]
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def set(self, mode):
        assert mode in ("pass", "stall", "blackhole", "reset"), mode
        with self.lock:
            self.mode = mode
            if mode == "reset":
                for pair in self.pairs:
                    for s in pair[:2]:
                        _reset(s)
                self.pairs.clear()

    def connections(self):
        with self.lock:
            return len(self.pairs)

    def close(self):
        self.stopped = True
        self.thread.join(timeout=5)
        with self.lock:
            for pair in self.pairs:
                for s in pair[:2]:
                    s.close()
            self.pairs.clear()
        self.listener.close()

    def _accept(self):
        client, _ = self.listener.accept()
        if self.mode == "reset":
            _reset(client)
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pairs.append([client, server, bytearray(), bytearray()])

    def _loop(self):
        while not self.stopped:
            with self.lock:
                socks = [self.listener] + [s for p in self.pairs for s in p[:2]]
            readable, _, _ = select.select(socks, [], [], 0.05)
            with self.lock:
                if self.listener in readable:
                    self._accept()
                for pair in list(self.pairs):
                    self._pump(pair, readable)

    def _pump(self, pair, readable):
        client, server, to_server, to_client = pair
        for src, buf in ((client, to_server), (server, to_client)):
            if src not in readable:
                continue
            try:
                data = src.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:  # one side closed: close the other (as a network path would deliver the FIN)
                self._drop(pair)
                return
            if self.mode != "blackhole":
                buf.extend(data)
        if self.mode != "pass":
            return
        for dst, buf in ((server, to_server), (client, to_client)):
            while buf:
                try:
                    n = dst.send(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self._drop(pair)
                    return
                del buf[:n]

    def _drop(self, pair):
        for s in pair[:2]:
            s.close()
        if pair in self.pairs:
            self.pairs.remove(pair)


def _reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
