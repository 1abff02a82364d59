"""llama-cpp-python's OpenAI server, ending every chat stream with a usage chunk.

llama-cpp-python (0.3.x) ignores ``stream_options.include_usage``: its streams say nothing of
their tokens, so the gateway could only estimate what a local stream used. Here the model counts
them the way the library counts a non-streamed answer (``Llama._create_completion``): the prompt
as tokenized for the model, and every generated token but the end-of-generation one. The chunk is
OpenAI's (``choices: []`` and ``usage``, just before ``[DONE]``) and is sent whether or not the
request asked for it, since the server drops ``stream_options``: the gateway, its one client, asks
for it always and passes it on only to clients that asked.

    python -m gateway.local.llama_server --model FILE ...   # llama_cpp.server's own flags
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

import llama_cpp
import llama_cpp.server.__main__ as llama_server_main

__all__ = ["CountingLlama", "main"]


class CountingLlama(llama_cpp.Llama):
    """``Llama`` keeping the token counts of the generation it last ran."""

    usage: dict[str, int] | None = None

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Generator[int, Sequence[int] | None, None]:
        usage = {"prompt_tokens": len(tokens), "completion_tokens": 0}
        self.usage = usage
        for token in super().generate(tokens, *args, **kwargs):
            if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):  # as the library counts
                usage["completion_tokens"] += 1
            yield token

    def create_chat_completion(self, *args: Any, **kwargs: Any) -> Any:
        self.usage = None
        result = super().create_chat_completion(*args, **kwargs)
        if kwargs.get("stream") and not isinstance(result, dict):
            return self._with_usage(result)
        return result

    def _with_usage(self, chunks: Iterator[Any]) -> Iterator[Any]:
        last: Any = None
        for chunk in chunks:
            last = chunk
            yield chunk
        if last is not None and self.usage is not None:
            usage = {**self.usage, "total_tokens": self.usage["prompt_tokens"] + self.usage["completion_tokens"]}
            keep = ("id", "object", "created", "model")
            yield {**{k: last[k] for k in keep if k in last}, "choices": [], "usage": usage}


def main() -> None:
    # The server creates its model, and calls it, through the module's attribute.
    llama_cpp.Llama = CountingLlama  # type: ignore[misc]
    llama_server_main.main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
