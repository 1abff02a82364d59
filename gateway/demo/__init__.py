"""Demo and test tooling: a thread-hosted server (the fake upstream over real HTTP), demo traffic.
Serving code never imports it."""
