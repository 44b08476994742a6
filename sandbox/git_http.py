"""A git remote over smart HTTP on localhost: `git http-backend` (CGI) behind a small aiohttp
server that asks for HTTP Basic auth with one token, as a forge does for a deploy token.

    async with GitHttpServer(root, token="…") as server:
        url = server.url("app.git")    # http://127.0.0.1:PORT/app.git

Each request is recorded (method, path, status, whether its credentials were right) so a
test can tell an anonymous attempt from a refused one; the credentials themselves are not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web

HTTP_BACKEND = Path(shutil.which("git-http-backend") or "/usr/lib/git-core/git-http-backend")
CGI_SECONDS = 60


@dataclass(frozen=True)
class GitRequest:
    method: str
    path: str
    status: int
    authorized: bool


def _credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _split_cgi_output(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, separator, body = output.partition(b"\r\n\r\n")
    if not separator:
        head, _, body = output.partition(b"\n\n")
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers.append((name, value.strip()))
    return status, headers, body


class GitHttpServer:
    """Serves every bare repository under `root`; pushing needs the token too."""

    def __init__(self, root: Path, *, token: str, username: str = "x-access-token") -> None:
        self.root = root
        self._token = token
        self._username = username
        self.requests: list[GitRequest] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, repository: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repository}"

    def _authorized(self, request: web.Request) -> bool:
        given = _credentials(request.headers.get("Authorization", ""))
        if given is None:
            return False
        user, password = given
        return hmac.compare_digest(user, self._username) and hmac.compare_digest(
            password.encode(), self._token.encode()
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        authorized = self._authorized(request)
        if not authorized:
            self.requests.append(GitRequest(request.method, request.path, 401, False))
            return web.Response(
                status=401, headers={"WWW-Authenticate": 'Basic realm="git"'}, text="auth"
            )
        body = await request.read()
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": self._username,  # http-backend lets an authenticated user push
            "REMOTE_ADDR": request.remote or "127.0.0.1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        if "Content-Encoding" in request.headers:
            environment["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
        if "Git-Protocol" in request.headers:
            environment["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        process = await asyncio.create_subprocess_exec(
            str(HTTP_BACKEND),
            env=environment,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(CGI_SECONDS):
                output, _ = await process.communicate(body)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        status, headers, content = _split_cgi_output(output)
        self.requests.append(GitRequest(request.method, request.path, status, True))
        response = web.Response(status=status, body=content)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding"):
                response.headers[name] = value
        return response

    async def __aenter__(self) -> GitHttpServer:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        except BaseException:
            await runner.cleanup()  # __aexit__ is not called when __aenter__ raises
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
