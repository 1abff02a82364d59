"""Pure translations between the APIs clients speak and chat completions (no HTTP, no I/O).

Each endpoint parses its API's request into a chat-completions body, the pipeline runs it, and
the chat answer (JSON or a stream of chunks) is translated back into the API's own shape.
"""
