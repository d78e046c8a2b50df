"""Errors of the request path, each with the HTTP status it is answered with."""

from __future__ import annotations


class RequestError(Exception):
    """The request is unacceptable: answered with ``status`` (4xx) and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ModelError(Exception):
    """The model raised while predicting valid input: answered with 500 and the model's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
