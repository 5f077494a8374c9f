"""The HTTP application: `create_app()` and one thin router per protocol."""

from outcrop.api.app import create_app

__all__ = ["create_app"]
