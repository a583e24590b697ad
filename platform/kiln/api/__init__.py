"""The control-plane HTTP API (FastAPI), one router per noun under ``routes/``."""

from kiln.api.app import create_app

__all__ = ["create_app"]
