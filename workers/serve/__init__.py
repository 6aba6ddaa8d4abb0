"""`fraud serve`: inline scoring over HTTP."""

from workers.serve.app import create_app, run_serve

__all__ = ["create_app", "run_serve"]
