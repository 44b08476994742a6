"""A remote Docker engine on localhost: the local engine's socket behind a TCP port that
speaks TLS and requires a client certificate, as `dockerd --tlsverify` does.

Certificates are made with the `openssl` command line (a CA, a server certificate for
127.0.0.1, a client certificate, and a second CA whose client certificate the engine must
refuse). The forwarder is asyncio streams; stopping it closes every open connection too,
so a client's kept-alive connection does not outlive "the engine went away".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DOCKER_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_client_cert: Path  # signed by another CA: the engine refuses it
    rogue_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(folder: Path, ca: str, name: str, subject: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", subject,
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def _authority(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=rollback-bot test {name}",
        cwd=folder,
    )  # fmt: skip


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    _authority(folder, "ca")
    _authority(folder, "rogue-ca")
    _signed(
        folder,
        "ca",
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    client = "extendedKeyUsage=clientAuth\n"
    _signed(folder, "ca", "client", "/CN=rollback-bot", client)
    _signed(folder, "rogue-ca", "rogue", "/CN=rollback-bot", client)
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client-key.pem",
        rogue_client_cert=folder / "rogue.pem",
        rogue_client_key=folder / "rogue-key.pem",
    )


class _TlsSession:
    """The server side of one TLS connection over memory buffers: unlike asyncio's own TLS
    transport, a refused handshake still sends its alert, as dockerd (Go) does, so the
    client learns why ("alert unknown ca"), not just that the connection closed."""

    def __init__(self, context: ssl.SSLContext, writer: asyncio.StreamWriter) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._writer = writer

    async def _flush(self) -> None:
        if pending := self._outgoing.read():
            self._writer.write(pending)
            await self._writer.drain()

    async def handshake(self, reader: asyncio.StreamReader) -> bool:
        """True once done; False if the client went away; raises if it was refused."""
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if not (data := await reader.read(65536)):
                    return False
                self._incoming.write(data)
                continue
            except ssl.SSLError:
                await self._flush()  # the alert, then the error for the caller
                raise
            await self._flush()
            return True

    async def decrypt(self, data: bytes) -> bytes:
        self._incoming.write(data)
        plain = b""
        while True:
            try:
                chunk = self._tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break
            if not chunk:  # the client said close_notify
                break
            plain += chunk
        await self._flush()
        return plain

    async def send(self, plain: bytes) -> None:
        self._tls.write(plain)
        await self._flush()


@dataclass
class TlsForwarder:
    """tcp://127.0.0.1:port with TLS, client certificate required → the engine's socket."""

    certificates: Certificates
    socket_path: str = DOCKER_SOCKET
    port: int = 0
    handshakes: int = 0  # connections that passed the certificate check
    refused: int = 0  # connections refused (an alert sent)
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificates.server_cert, self.certificates.server_key)
        context.load_verify_locations(self.certificates.ca)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """The engine goes away: no new connection, and the open ones are cut."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            session = _TlsSession(self._context(), writer)
            with contextlib.suppress(ConnectionError, OSError):
                try:
                    if not await session.handshake(reader):
                        return
                except ssl.SSLError:
                    self.refused += 1
                    return
                self.handshakes += 1
                engine_reader, engine_writer = await asyncio.open_unix_connection(self.socket_path)
                self._open.add(engine_writer)
                try:
                    await asyncio.gather(
                        self._upstream(reader, session, engine_writer),
                        self._downstream(engine_reader, session, writer),
                    )
                finally:
                    self._open.discard(engine_writer)
                    engine_writer.close()
        finally:
            self._open.discard(writer)
            writer.close()

    @staticmethod
    async def _upstream(
        reader: asyncio.StreamReader, session: _TlsSession, engine: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            data = b""  # the request may have come with the handshake's last flight
            while True:
                if plain := await session.decrypt(data):
                    engine.write(plain)
                    await engine.drain()
                if not (data := await reader.read(65536)):
                    break
        engine.close()  # one side finished: the other must not wait forever

    @staticmethod
    async def _downstream(
        engine: asyncio.StreamReader, session: _TlsSession, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            while plain := await engine.read(65536):
                await session.send(plain)
        writer.close()
