"""A loopback TCP proxy that can cut a connection after N bytes and counts what it forwards."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class CuttingProxy:
    upstream: tuple[str, int]
    cut_first_after: int | None = None  # bytes downstream on the first connection
    downstream_bytes: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
                n = self.connections
            threading.Thread(target=self._serve, args=(client, n), daemon=True).start()

    def _serve(self, client: socket.socket, n: int) -> None:
        upstream = socket.create_connection(self.upstream)
        limit = self.cut_first_after if n == 1 else None

        def up() -> None:
            try:
                while data := client.recv(65536):
                    with self._lock:
                        self.requests.append(data)
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    data = data[: limit - sent]
                    client.sendall(data)
                    with self._lock:
                        self.downstream_bytes += len(data)
                    break  # the link drops mid-file
                client.sendall(data)
                sent += len(data)
                with self._lock:
                    self.downstream_bytes += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
