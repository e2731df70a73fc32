"""The systems under test: one module per server model, plus the contract they share.

``MODELS`` (from ``servers.registry``) is the registry the orchestrator and the CLI use.
"""

from servers.registry import MODELS, ModelSpec

__all__ = ["MODELS", "ModelSpec"]
