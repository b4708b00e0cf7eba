"""The package's version: the server's (internal/httpapi/openapi.json info.version)."""

__version__ = "1.0.0"
