"""The feedback processor: analyst verdicts -> reference-bank changes, campaigns."""

from workers.feedback.main import run_feedback_processor
from workers.feedback.processor import Citations, FeedbackProcessor
from workers.feedback.recent import BoundedRecent, RecentMessages
from workers.feedback.send import send_verdict

__all__ = [
    "BoundedRecent",
    "Citations",
    "FeedbackProcessor",
    "RecentMessages",
    "run_feedback_processor",
    "send_verdict",
]
