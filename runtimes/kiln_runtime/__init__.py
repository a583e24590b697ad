"""What runs inside a Kiln dyno: each runtime's buildpack (detect + plan) and its HTTP server."""

__version__ = "0.1.0"
__all__ = ["__version__"]
