"""The chat template: GPT-2 is a base model, so a conversation becomes a plain transcript that
it continues, and the reply ends where the model starts the next turn.

::

    <system message>            each system (or developer) message as a paragraph,
                                followed by a blank line
    User: <user message>
    Assistant: <assistant message>
    User: <user message>
    Assistant:                  the model writes from here

Generation stops at the next turn marker (``"\\nUser:"`` or ``"\\nAssistant:"``, besides the
request's own ``stop`` strings), and the reply loses the one space that follows ``Assistant:``
(GPT-2's tokens carry a word's leading space, so the prompt cannot end with it).
"""

from __future__ import annotations

from typing import Any

from ..errors import ApiError

SYSTEM_ROLES = ("system", "developer")
TURN_NAMES = {"user": "User", "assistant": "Assistant"}
TURN_STOPS = ("\nUser:", "\nAssistant:")
REPLY_START = "Assistant:"


def transcript(messages: object) -> str:
    """The prompt for ``messages`` (OpenAI's list of ``{"role", "content"}`` objects).

    Raises:
        ApiError: not a non-empty list of messages with a known role and text content.
    """
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of messages.", "messages")
    system: list[str] = []
    turns: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with role and content.", "messages")
        role = message.get("role")
        content = _text(message.get("content"), where)
        if role in SYSTEM_ROLES:
            system.append(content)
        elif role in TURN_NAMES:
            turns.append(f"{TURN_NAMES[role]}: {content}")
        else:
            known = ", ".join((*SYSTEM_ROLES, *TURN_NAMES))
            raise ApiError(
                400, f"{where}.role must be one of {known}, got {_shown(role)}.", "messages"
            )
    head = "".join(f"{s}\n\n" for s in system)
    return head + "".join(f"{t}\n" for t in turns) + REPLY_START


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise ApiError(
        400,
        f"{where}.content must be a string or a list of text parts; this model reads text only.",
        "messages",
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else type(value).__name__
