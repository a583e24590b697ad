"""The ``python`` runtime: an ASGI or WSGI app (FastAPI, Starlette, Flask) served by uvicorn."""
