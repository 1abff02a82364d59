"""OpenAI's Responses API <-> chat completions.

Stateless: the whole conversation comes in ``input`` (messages, function calls and their
outputs); nothing is stored, so ``previous_response_id``, ``conversation`` and ``store: true``
are refused. Function tools only (hosted tools such as web search run at OpenAI, not here).
Every field is checked against the ``openai`` SDK's type for it; a field this gateway does not
accept is refused naming it, never passed on.
"""

from gateway.translate.responses.answer import chat_to_response
from gateway.translate.responses.events import ResponseEvents
from gateway.translate.responses.request import RESPONSES_FIELDS, responses_to_chat

__all__ = ["RESPONSES_FIELDS", "ResponseEvents", "chat_to_response", "responses_to_chat"]
