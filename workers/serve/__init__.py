"""`fraud serve`: inline scoring over HTTP (app.py says how the package is laid out)."""

from workers.serve.app import create_app
from workers.serve.guard import load_tokens
from workers.serve.main import run_serve
from workers.serve.scorer import InlineScorer, load_scorer

__all__ = ["InlineScorer", "create_app", "load_scorer", "load_tokens", "run_serve"]
