"""The HTTP and WebSocket API (FastAPI): `serving.http.app.create_app(service)` builds it."""
