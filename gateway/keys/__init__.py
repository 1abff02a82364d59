"""Virtual keys, budgets and rate limits."""

from gateway.keys.guard import Guard
from gateway.keys.limiter import Limiter, MemoryLimiter, Reservation
from gateway.keys.store import Identity, KeyStore

__all__ = ["Guard", "Identity", "KeyStore", "Limiter", "MemoryLimiter", "Reservation"]
