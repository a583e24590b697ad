"""Kiln: a self-hosted serverless GPU inference platform (push -> build -> release -> run -> route)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
