"""The feedback processor: analyst verdicts -> reference-bank changes, campaigns."""

from workers.feedback.processor import FeedbackProcessor

__all__ = ["FeedbackProcessor"]
