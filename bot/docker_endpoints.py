"""Docker engines the environments name: checked when the file is read, one client each.

An environment without `docker_endpoint` uses the local engine (DOCKER_HOST, or the
socket), as always. `unix:///path` names another socket; `tcp://host:port` an engine on
another host, reached with TLS client certificates (`docker_tls_ca`, `docker_tls_cert`,
`docker_tls_key`, as `docker --tlsverify` uses them). Plain tcp without TLS gives whoever
is on the network path the engine (root on that host): it is refused unless the file says
`docker_tls = false`.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import aiodocker
import aiohttp

from services.environments import DockerEndpoint, DockerTls, Environment

# Reaching an engine; each call's own deadline is the runtime's (per environment).
# No total: the events stream the stop step follows stays open as long as it needs.
DOCKER_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))$")
_TLS_KEYS = ("docker_tls_ca", "docker_tls_cert", "docker_tls_key")


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and `serve` would hang.
    raise ValueError("the key is encrypted with a passphrase; give the bot an unencrypted key")


def tls_context(tls: DockerTls) -> ssl.SSLContext:
    """Verifies the engine against the CA and presents this bot's certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key), password=_no_passphrase)
    return context


def _endpoint_url(url: str) -> tuple[str | None, str]:
    """(the URL in its one spelling, or None; the problem)."""
    if url.startswith("unix://"):
        path = url.removeprefix("unix://")
        if not path.startswith("/") or "\x00" in path or "?" in path or "#" in path:
            return None, f"{url!r}: a socket is named unix:///absolute/path"
        return f"unix://{path}", ""
    if not url.startswith("tcp://"):
        return None, f"{url!r}: must be unix:///path/to/docker.sock or tcp://host:port"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return None, f"{url!r}: {error}"
    host = parts.netloc.rsplit(":", 1)[0] if port else parts.netloc
    if parts.username or parts.password or parts.query or parts.fragment:
        return None, f"{url!r}: only tcp://host:port (no user, query or fragment)"
    if parts.path not in ("", "/") or not _HOST.match(host) or port is None:
        return None, f"{url!r}: must be tcp://host:port (the engine's TLS port is usually 2376)"
    return f"tcp://{host}:{port}", ""


def check_endpoint(
    key: str,
    url: str | None,
    tls_files: Mapping[str, Path | None],
    tls: bool | None,
    base: Path,
    problems: list[str],
) -> DockerEndpoint | None:
    """The environment's endpoint, or None (the local engine); problems appended, one line
    each, naming the key. `tls_files`: docker_tls_ca, docker_tls_cert, docker_tls_key."""
    given = [name for name in _TLS_KEYS if tls_files.get(name) is not None]
    tls_keys = ", ".join(given) or "docker_tls"
    if url is None:
        if given or tls is not None:
            problems.append(f"{key}: {tls_keys}: only with a tcp:// docker_endpoint")
        return None
    shown, problem = _endpoint_url(url)
    if shown is None:
        problems.append(f"{key}.docker_endpoint: {problem}")
        return None
    if shown.startswith("unix://"):
        if given or tls is not None:
            problems.append(f"{key}: {tls_keys}: only with a tcp:// docker_endpoint")
        return DockerEndpoint(url=shown)
    if tls is False:
        if given:
            problems.append(f"{key}: docker_tls = false, yet {', '.join(given)} given")
        return DockerEndpoint(url=shown)
    missing = [name for name in _TLS_KEYS if name not in given]
    if missing:
        problems.append(
            f"{key}: {shown} needs {', '.join(missing)} (the engine's CA, this bot's client "
            "certificate and key); for an engine without TLS say docker_tls = false"
        )
        return None
    paths = {name: base / path for name, path in tls_files.items() if path is not None}
    unfit = [f"{key}.{n}: {p} is not a readable file" for n, p in paths.items() if not _readable(p)]
    if unfit:
        problems.extend(unfit)
        return None
    files = DockerTls(
        ca=paths["docker_tls_ca"], cert=paths["docker_tls_cert"], key=paths["docker_tls_key"]
    )
    try:
        tls_context(files)
    except (ssl.SSLError, ValueError, OSError) as error:
        problems.append(f"{key}: the TLS files for {shown} do not fit together: {error}")
        return None
    return DockerEndpoint(url=shown, tls=files)


def _readable(path: Path) -> bool:
    try:
        with path.open("rb"):
            return path.is_file()
    except OSError:
        return False


def describe_engine(environment: Environment) -> str:
    """For check-config: " on ENGINE" and how it is reached; nothing for the local one."""
    endpoint = environment.docker_endpoint
    if endpoint is None:
        return ""
    if endpoint.url.startswith("tcp://") and endpoint.tls is None:
        return f" on {endpoint.url} WITHOUT TLS (docker_tls = false)"
    return f" on {endpoint.url}" + (" with TLS client certificates" if endpoint.tls else "")


async def open_docker_clients(
    stack: AsyncExitStack, environments: Mapping[str, Environment]
) -> dict[DockerEndpoint | None, aiodocker.Docker]:
    """One client per engine the environments use, closed by `stack`. Nothing connects
    here: an engine that is down fails its own environments' calls, not the start-up."""
    clients: dict[DockerEndpoint | None, aiodocker.Docker] = {}
    for environment in environments.values():
        endpoint = environment.docker_endpoint
        if endpoint in clients:
            continue
        if endpoint is None:
            client = aiodocker.Docker(timeout=DOCKER_CLIENT_TIMEOUT)
        else:
            client = aiodocker.Docker(
                url=endpoint.client_url,
                ssl_context=tls_context(endpoint.tls) if endpoint.tls else None,
                timeout=DOCKER_CLIENT_TIMEOUT,
            )
        stack.push_async_callback(client.close)
        clients[endpoint] = client
    return clients
