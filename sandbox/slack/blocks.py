"""Block Kit validation and normalisation, as Slack applies them to stored messages."""

from __future__ import annotations

import copy
import json
import secrets
import string
import warnings
from collections.abc import Iterator
from typing import Any

from slack_sdk.models.blocks import Block

JsonDict = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_FIELD_TEXT = 2000
MAX_CHECKBOX_OPTIONS = 10
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_ID_LENGTH = 255

INTERACTIVE_TYPES = frozenset(
    {
        "button",
        "checkboxes",
        "radio_buttons",
        "static_select",
        "external_select",
        "users_select",
        "conversations_select",
        "channels_select",
        "multi_static_select",
        "multi_external_select",
        "multi_users_select",
        "multi_conversations_select",
        "multi_channels_select",
        "overflow",
        "datepicker",
        "timepicker",
        "datetimepicker",
        "plain_text_input",
        "email_text_input",
        "url_text_input",
        "number_input",
        "rich_text_input",
        "file_input",
        "workflow_button",
    }
)
CONTEXT_ELEMENT_TYPES = frozenset({"image", "mrkdwn", "plain_text"})
_ID_ALPHABET = string.ascii_letters + string.digits


class InvalidBlocksError(ValueError):
    """Blocks that Slack would refuse with ``invalid_blocks``; ``errors`` as Slack lists them."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def decode_blocks(raw: object) -> list[JsonDict] | None:
    """Blocks as sent: a JSON string (form-encoded requests) or a list (JSON requests)."""
    if raw is None or raw == "":
        return None
    value: object = raw
    if isinstance(raw, str | bytes):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise InvalidBlocksError([f"blocks are not valid JSON: {exc}"]) from exc
    if not isinstance(value, list):
        raise InvalidBlocksError(["must provide an array [json-pointer:/blocks]"])
    return value


def validate_blocks(blocks: list[Any], *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> None:
    """Raise :class:`InvalidBlocksError` listing every problem found."""
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for index, raw in enumerate(blocks):
        pointer = f"/blocks/{index}"
        errors.extend(f"{e} [json-pointer:{pointer}]" for e in _block_errors(raw))
        if isinstance(raw, dict) and isinstance(raw.get("block_id"), str):
            if raw["block_id"] in block_ids:
                errors.append(f"duplicate block_id {raw['block_id']!r} [json-pointer:{pointer}]")
            block_ids.add(raw["block_id"])
    if errors:
        raise InvalidBlocksError(errors)


def _block_errors(raw: object) -> Iterator[str]:
    if not isinstance(raw, dict):
        yield "each block must be an object"
        return
    kind = raw.get("type")
    try:
        # Odd input (a deprecated "subtype" key) makes slack_sdk warn; the block is judged
        # by its validators, not by warnings escaping into the server.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            block = Block.parse(copy.deepcopy(raw))
            if block is None:
                yield f"unsupported block type {kind!r}"
                return
            block.validate_json()
            block.to_dict()  # validates nested elements and text objects too
    except Exception as exc:  # slack_sdk raises SlackObjectFormationError, or worse on junk
        yield str(exc) or type(exc).__name__
        return
    yield from _extra_errors(kind, raw)


def _text_of(obj: object) -> tuple[str | None, str]:
    if isinstance(obj, dict):
        return obj.get("type"), str(obj.get("text", ""))
    return None, ""


def _extra_errors(kind: object, raw: JsonDict) -> Iterator[str]:
    """Limits Slack enforces that slack_sdk's validators do not check."""
    if kind == "header":
        text_type, _ = _text_of(raw.get("text"))
        if text_type != "plain_text":
            yield "header text must be plain_text"
    if kind == "section":
        for number, item in enumerate(raw.get("fields") or []):
            _, text = _text_of(item)
            if len(text) > MAX_FIELD_TEXT:
                yield f"field {number} cannot exceed {MAX_FIELD_TEXT} characters"
        accessory = raw.get("accessory")
        if accessory is not None:
            yield from _element_errors(accessory)
    if kind == "actions":
        action_ids: set[str] = set()
        for element in raw.get("elements") or []:
            yield from _element_errors(element)
            action_id = element.get("action_id") if isinstance(element, dict) else None
            if isinstance(action_id, str):
                if action_id in action_ids:
                    yield f"duplicate action_id {action_id!r}"
                action_ids.add(action_id)
    if kind == "context":
        for element in raw.get("elements") or []:
            element_type = element.get("type") if isinstance(element, dict) else None
            if element_type not in CONTEXT_ELEMENT_TYPES:
                yield f"context element type {element_type!r} is not allowed"
    if kind == "input":
        element = raw.get("element")
        if element is not None:
            yield from _element_errors(element)


def _element_errors(element: object) -> Iterator[str]:
    if not isinstance(element, dict):
        yield "each element must be an object"
        return
    element_type = element.get("type")
    if element_type not in INTERACTIVE_TYPES and element_type != "image":
        yield f"unsupported element type {element_type!r}"
        return
    action_id = element.get("action_id")
    if isinstance(action_id, str) and len(action_id) > MAX_ID_LENGTH:
        yield f"action_id cannot exceed {MAX_ID_LENGTH} characters"
    if element_type in {"button", "workflow_button"}:
        text_type, _ = _text_of(element.get("text"))
        if text_type != "plain_text":
            yield "button text must be plain_text"
    if element_type in {"checkboxes", "radio_buttons"}:
        options = element.get("options") or []
        if len(options) > MAX_CHECKBOX_OPTIONS:
            yield f"{element_type} cannot have more than {MAX_CHECKBOX_OPTIONS} options"
        for option in options:
            _, text = _text_of(option.get("text") if isinstance(option, dict) else None)
            value = str(option.get("value", "")) if isinstance(option, dict) else ""
            if len(text) > MAX_OPTION_TEXT:
                yield f"option text cannot exceed {MAX_OPTION_TEXT} characters"
            if len(value) > MAX_OPTION_VALUE:
                yield f"option value cannot exceed {MAX_OPTION_VALUE} characters"


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def iter_elements(block: JsonDict) -> Iterator[JsonDict]:
    """Interactive and other elements of one block: actions elements, accessory, input."""
    for element in block.get("elements") or []:
        if isinstance(element, dict):
            yield element
    for key in ("accessory", "element"):
        element = block.get(key)
        if isinstance(element, dict):
            yield element


def normalise_blocks(blocks: list[JsonDict]) -> list[JsonDict]:
    """A stored copy, with the ``block_id`` and ``action_id`` Slack fills in when missing."""
    stored = copy.deepcopy(blocks)
    for block in stored:
        block.setdefault("block_id", _random_id(5))
        if block.get("type") == "context":
            continue
        for element in iter_elements(block):
            if element.get("type") in INTERACTIVE_TYPES:
                element.setdefault("action_id", _random_id(5))
    return stored
