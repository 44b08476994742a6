"""Plain-text rendering of Block Kit messages, for the demo's terminal transcript."""

from __future__ import annotations

import contextlib
import difflib
import html
import re
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from sandbox.slack.models import Message

if TYPE_CHECKING:
    from sandbox.slack.workspace import SandboxWorkspace

RULE = "─" * 40
FIELD_WIDTH = 38
_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def render_message(
    message: Message | Mapping[str, Any], *, workspace: SandboxWorkspace | None = None
) -> list[str]:
    """The lines a person would read: blocks if any, else the text."""
    if isinstance(message, Message):
        blocks: Sequence[Mapping[str, Any]] = message.blocks
        text = message.text
    else:
        blocks = message.get("blocks") or []
        text = str(message.get("text") or "")
    if not blocks:
        return _mrkdwn(text, workspace).splitlines() or [""]
    lines: list[str] = []
    for block in blocks:
        lines.extend(_render_block(block, workspace))
    return lines


def render_entry(message: Message, *, workspace: SandboxWorkspace | None = None) -> list[str]:
    """A transcript entry: who, when, to whom, then the message indented."""
    clock = time.strftime("%H:%M:%S", time.localtime(message.posted_at))
    author = message.user or "?"
    if workspace is not None and author in workspace.users:
        author = workspace.users[author].name
    notes = []
    if message.is_ephemeral:
        seen_by = message.ephemeral_to or "?"
        if workspace is not None and seen_by in workspace.users:
            seen_by = workspace.users[seen_by].name
        notes.append(f"only visible to {seen_by}")
    if message.is_reply:
        notes.append("in thread")
    if message.edited:
        notes.append("edited")
    suffix = f" ({', '.join(notes)})" if notes else ""
    body = render_message(message, workspace=workspace)
    return [f"[{clock}] {author}{suffix}:", *(f"    {line}" for line in body)]


class LiveTranscript:
    """What people in a sandbox workspace see, printed as it changes.

    Each new message (in a channel, a thread, a direct message, or shown to one person) is
    printed whole under a header saying when, where and from whom. An edited message is
    printed again under an "edited" header, its unchanged stretches folded into one line,
    so that a message updated step by step reads as its steps.
    """

    def __init__(
        self, workspace: SandboxWorkspace, out: TextIO | None = None, *, width: int = 100
    ) -> None:
        self._ws = workspace
        self._out = out
        self._width = width
        self._shown: dict[tuple[str, str], int] = {}  # (channel, ts) -> edits already printed
        self._lines: dict[tuple[str, str], list[str]] = {}  # as last printed

    def changes(self) -> list[Message]:
        """Messages new or edited since they were last printed, in the order it happened."""
        ws = self._ws
        seen: list[Message] = []
        for channel in list(ws.channels):
            for message in ws.messages(channel):
                seen.append(message)
                seen.extend(ws.thread(channel, message.ts))
        for user in list(ws.users):
            seen.extend(ws.ephemerals(user))
        changed = [m for m in seen if self._shown.get((m.channel, m.ts), -1) < len(m.edits)]
        return sorted(changed, key=_changed_at)

    def flush(self) -> int:
        """Print what changed since the last flush; how many entries were printed."""
        printed = 0
        out = self._out or sys.stdout
        for message in self.changes():
            key = (message.channel, message.ts)
            self._shown[key] = len(message.edits)
            lines = self.body(message)
            before = self._lines.get(key)
            self._lines[key] = lines
            if before == lines:
                continue  # an edit a reader cannot see
            shown = lines if before is None else fold_unchanged(before, lines)
            entry = [self.header(message), *(f"    {line}" for line in shown)]
            print("\n".join([*wrap(entry, self._width), ""]), file=out, flush=True)
            printed += 1
        return printed

    async def follow(self) -> None:
        """Flush on every change in the workspace, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await self._ws.wait_for(self.changes, timeout=60)
            self.flush()

    def header(self, message: Message) -> str:
        ws = self._ws
        clock = time.strftime("%H:%M:%S", time.localtime(_changed_at(message)))
        channel = ws.channels.get(message.channel)
        if channel is not None and channel.user is not None:
            where = f"direct message to {_user_name(ws, channel.user)}"
        else:
            where = f"#{channel.name if channel else message.channel}"
        notes = []
        if message.is_reply:
            notes.append("in thread")
        if message.is_ephemeral:
            notes.append(f"only visible to {_user_name(ws, message.ephemeral_to or '?')}")
        if message.edited:
            notes.append("edited")
        suffix = f" ({', '.join(notes)})" if notes else ""
        return f"[{clock}] {where} · {_user_name(ws, message.user or '?')}{suffix}"

    def body(self, message: Message) -> list[str]:
        """The message as a terminal shows it: one line per label and value, no markup."""
        blocks = [_one_line_fields(block) for block in message.blocks]
        shown = {"text": message.text, "blocks": blocks}
        return [_plain(line) for line in render_message(shown, workspace=self._ws)]


def fold_unchanged(before: Sequence[str], after: Sequence[str], *, keep: int = 2) -> list[str]:
    """`after`, its runs of more than `keep` lines equal to `before` folded into one line
    (the first line, a title, always shown), and lines no longer there marked as removed."""
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            run = list(after[j1:j2])
            if j1 == 0:
                out.append(run.pop(0))
            if len(run) > keep:
                out.append(f"┆ {len(run)} lines as before")
            else:
                out.extend(run)
        elif tag == "delete":
            out.extend(f"┆ removed: {line.strip()}" for line in before[i1:i2])
        else:
            out.extend(after[j1:j2])
    return out


_FIELD = re.compile(r"^\*([^*\n]+)\*\n([^\n]+)$")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def _one_line_fields(block: Mapping[str, Any]) -> Mapping[str, Any]:
    """A section's fields written as "*Label*\\nvalue" made "*Label:* value"."""
    fields = block.get("fields")
    if block.get("type") != "section" or not fields:
        return block
    joined = []
    for field in fields:
        match = _FIELD.match(str(field.get("text", "")))
        joined.append({**field, "text": f"*{match[1]}:* {match[2]}"} if match else field)
    return {**block, "fields": joined}


def _plain(line: str) -> str:
    """Slack's bold and code markers dropped, for a terminal."""
    return _BOLD.sub(r"\1", line.replace("```", ""))


def _changed_at(message: Message) -> float:
    return message.edits[-1].at if message.edits else message.posted_at


def _user_name(ws: SandboxWorkspace, user_id: str) -> str:
    user = ws.users.get(user_id)
    return user.name if user is not None else user_id


# ---------------------------------------------------------------------- blocks


def _render_block(block: Mapping[str, Any], ws: SandboxWorkspace | None) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = _text(block.get("text"), ws)
        return [title, "=" * max(len(title), 3)]
    if kind == "divider":
        return [RULE]
    if kind == "section":
        return _render_section(block, ws)
    if kind == "context":
        parts = [_context_part(e, ws) for e in block.get("elements") or []]
        return ["  " + "  ·  ".join(p for p in parts if p)]
    if kind == "actions":
        return _render_elements(block.get("elements") or [], ws)
    if kind == "input":
        label = _text(block.get("label"), ws)
        return [f"{label}:", *_render_elements([block.get("element") or {}], ws)]
    if kind in ("markdown", "rich_text"):
        return _flatten(block).splitlines() or [""]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    return [f"[{kind} block]"]


def _render_section(block: Mapping[str, Any], ws: SandboxWorkspace | None) -> list[str]:
    lines = _text(block.get("text"), ws).splitlines() if block.get("text") else []
    fields = [_text(f, ws) for f in block.get("fields") or []]
    for left, right in zip(fields[::2], [*fields[1::2], ""], strict=False):
        if "\n" in left or "\n" in right or len(left) > FIELD_WIDTH:
            lines.extend(left.splitlines())
            lines.extend(right.splitlines())
        else:
            lines.append(f"{left:<{FIELD_WIDTH}} {right}".rstrip())
    accessory = block.get("accessory")
    if isinstance(accessory, Mapping):
        lines.extend(_render_elements([accessory], ws))
    return lines


def _render_elements(elements: Sequence[Any], ws: SandboxWorkspace | None) -> list[str]:
    lines: list[str] = []
    inline: list[str] = []
    for element in elements:
        if not isinstance(element, Mapping):
            continue
        kind = element.get("type")
        if kind in ("checkboxes", "radio_buttons"):
            if inline:
                lines.append(" ".join(inline))
                inline = []
            lines.extend(_render_options(element, ws))
        elif kind == "button":
            inline.append(f"[ {_text(element.get('text'), ws)} ]")
        elif kind == "overflow":
            inline.append("[ … ]")
        elif kind == "image":
            inline.append(f"[image: {element.get('alt_text', '')}]")
        else:
            placeholder = _text(element.get("placeholder"), ws) or str(kind)
            inline.append(f"[ {placeholder} ▾ ]")
    if inline:
        lines.append(" ".join(inline))
    return lines


def _render_options(element: Mapping[str, Any], ws: SandboxWorkspace | None) -> list[str]:
    initial = element.get("initial_options") or (
        [element["initial_option"]] if element.get("initial_option") else []
    )
    chosen = {o.get("value") for o in initial if isinstance(o, Mapping)}
    radio = element.get("type") == "radio_buttons"
    lines = []
    for option in element.get("options") or []:
        ticked = option.get("value") in chosen
        mark = ("(•)" if ticked else "( )") if radio else ("[x]" if ticked else "[ ]")
        lines.append(f"{mark} {_text(option.get('text'), ws)}")
        if option.get("description"):
            lines.append(f"    {_text(option.get('description'), ws)}")
    return lines


def _context_part(element: Any, ws: SandboxWorkspace | None) -> str:
    if not isinstance(element, Mapping):
        return ""
    if element.get("type") == "image":
        return f"[{element.get('alt_text', 'image')}]"
    return " ".join(_text(element, ws).split())


# ---------------------------------------------------------------------- text


def _text(obj: Any, ws: SandboxWorkspace | None) -> str:
    if isinstance(obj, str):
        return _mrkdwn(obj, ws)
    if not isinstance(obj, Mapping):
        return ""
    text = str(obj.get("text") or "")
    return _mrkdwn(text, ws) if obj.get("type") == "mrkdwn" else text


def _mrkdwn(text: str, ws: SandboxWorkspace | None) -> str:
    """Slack's ``<…>`` mentions and links made readable, entities unescaped."""

    def replace(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("@"):
            user_id = target[1:]
            if label:
                return f"@{label}"
            if ws is not None and user_id in ws.users:
                return f"@{ws.users[user_id].name}"
            return f"@{user_id}"
        if target.startswith("#"):
            channel_id = target[1:]
            if label:
                return f"#{label}"
            if ws is not None and channel_id in ws.channels:
                return f"#{ws.channels[channel_id].name}"
            return f"#{channel_id}"
        if target.startswith("!subteam^"):
            group_id = target.removeprefix("!subteam^")
            if label:
                return label if label.startswith("@") else f"@{label}"
            if ws is not None and group_id in ws.usergroups:
                return f"@{ws.usergroups[group_id].handle}"
            return f"@{group_id}"
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!"):
            return f"@{label or target[1:]}"
        return f"{label} ({target})" if label else target

    return html.unescape(_LINK.sub(replace, text))


def _flatten(node: Any) -> str:
    """Text of a ``markdown`` or ``rich_text`` block, structure dropped."""
    if isinstance(node, Mapping):
        if node.get("type") == "markdown":
            return str(node.get("text", ""))
        if node.get("type") in ("text", "link"):
            return str(node.get("text") or node.get("url") or "")
        if node.get("type") == "user":
            return f"@{node.get('user_id', '')}"
        if node.get("type") in ("rich_text_section", "rich_text_preformatted", "rich_text_quote"):
            return "".join(_flatten(e) for e in node.get("elements") or []) + "\n"
        if node.get("type") == "rich_text_list":
            return "".join(f"• {_flatten(e)}" for e in node.get("elements") or [])
        return "".join(_flatten(e) for e in node.get("elements") or [])
    return ""


def wrap(lines: Sequence[str], width: int = 100) -> list[str]:
    """Wrap long lines for a narrow terminal, keeping indentation."""
    out: list[str] = []
    for line in lines:
        indent = line[: len(line) - len(line.lstrip())]
        out.extend(textwrap.wrap(line, width, subsequent_indent=indent + "  ") or [""])
    return out
