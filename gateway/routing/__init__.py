"""Where a request goes: model name -> route, tier or deployment; ``auto`` asks the router."""
