"""The request pipeline (no HTTP): resolve, steer, authorize, plan, reserve, dispatch, settle, ledger."""

from gateway.pipeline.call import Call
from gateway.pipeline.core import Answer, Pipeline, StreamAnswer

__all__ = ["Answer", "Call", "Pipeline", "StreamAnswer"]
