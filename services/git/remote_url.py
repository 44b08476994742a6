"""Remote URLs: which forms are accepted, how they are shown (never with credentials), and
scrubbing libgit2's texts of anything secret before they reach a message or a log."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

_SCHEMES = frozenset({"https", "http", "ssh", "file"})
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
# user@host:path, git's scp-like form (a ':' before any '/').
_SCP = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^@/:]+):(?P<path>.+)$")
# The userinfo part of any URL inside a text (libgit2 may repeat the URL it used).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
MASK = "***"


def is_local_path(url: str) -> bool:
    return "://" not in url and _SCP.match(url) is None


def display_url(url: str) -> str:
    """`url` without its userinfo (user, password or token): safe to show and to store."""
    if "://" in url:
        return _USERINFO.sub(r"\g<scheme>", url)
    scp = _SCP.match(url)
    if scp is not None:
        return f"{scp['host']}:{scp['path']}"
    return url


def url_problems(url: str, *, sends_token: bool) -> list[str]:
    """What is wrong with a configured remote URL (empty: it may be used)."""
    if not url or not url.isprintable() or any(c.isspace() for c in url):
        return ["must be a URL or path without spaces or control characters"]
    if url.startswith("-"):
        return ["must not start with '-'"]
    if "://" not in url:
        return []  # scp-like user@host:path, or a local path
    parts = urlsplit(url)
    problems = []
    if parts.scheme not in _SCHEMES:
        problems.append(f"scheme {parts.scheme}:// is not one of https, http, ssh, file")
    if parts.scheme in ("https", "http") and "@" in parts.netloc:
        problems.append(
            "must not contain a user name or token (user@); set username, and name the "
            "variable that holds the token in token_env"
        )
    if parts.scheme == "ssh" and parts.password is not None:
        problems.append("must not contain a password; use ssh_key")
    if parts.scheme in ("https", "http", "ssh") and not parts.hostname:
        problems.append("has no host")
    if parts.scheme == "http" and sends_token and parts.hostname not in _LOOPBACK:
        problems.append("sends the token in clear over http://; use https://")
    return problems


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret masked and the userinfo of any URL in it removed."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _USERINFO.sub(r"\g<scheme>", text)
