"""The bundled local model: its supervised llama.cpp server and the loopback health probes."""
