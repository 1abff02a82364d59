"""Demo and test tooling: the fake upstream, a thread-hosted server, demo traffic. Not providers."""
