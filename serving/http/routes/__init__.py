"""The HTTP API's routers, one module each; `serving.http.app` includes them."""
