"""A bare WSGI app (what Flask and Django are underneath)."""


def application(environ, start_response):  # type: ignore[no-untyped-def]
    body = f"wsgi says {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
