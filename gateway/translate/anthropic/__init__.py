"""Anthropic's Messages API <-> chat completions.

Requests go through litellm's Anthropic adapter (``LiteLLMAnthropicMessagesAdapter``: content
blocks, images, tool use and results, system blocks, ``tool_choice``, stop sequences, structured
output), after each field and block is checked here against the ``anthropic`` SDK's type for it.
The adapter needs ``import litellm`` (~5 s) and the SDK's types take ~3 s more, so both are
loaded on first use, off the event loop (:func:`load`); a gateway whose clients never call
/v1/messages never pays for them.

Answers and streams are translated here rather than by the adapter: its stream wrapper works on
litellm's pydantic chunk objects (~460 µs a chunk measured, against ~5 µs here) and turns a
mid-stream failure into a normal end, where the client must see an ``error`` event.
"""

from gateway.translate.anthropic.answer import chat_to_message, error_body, error_type
from gateway.translate.anthropic.events import MessageEvents
from gateway.translate.anthropic.request import load, loaded, messages_to_chat

__all__ = [
    "MessageEvents",
    "chat_to_message",
    "error_body",
    "error_type",
    "load",
    "loaded",
    "messages_to_chat",
]
