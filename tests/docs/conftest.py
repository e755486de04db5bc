"""The docs tests' shared fixtures (defined in docs_helpers): the documents, and the HTTP
app served in-process."""

from docs_helpers import documents, http_app

__all__ = ["documents", "http_app"]
