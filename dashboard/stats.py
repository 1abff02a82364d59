"""The dashboard's estimates come from the gateway's one copy (``tierwise policy replay`` uses it too)."""

from gateway.quality.stats import MIN_SAMPLES, Estimate, Sums, wilson

__all__ = ["MIN_SAMPLES", "Estimate", "Sums", "wilson"]
