"""The `fraud feedback-processor` process: the workers' scoring path loaded, the processor
run until SIGTERM/SIGINT. One ExitStack owns what it opens, so a failing start closes
what was opened before it."""

import logging
from contextlib import ExitStack

from fraud.config import Settings
from workers.feedback.processor import FeedbackProcessor
from workers.processes import stop_on_signals
from workers.runtime import load_runtime

log = logging.getLogger(__name__)


def run_feedback_processor(settings: Settings) -> None:
    """Load the workers' detector (for retroactive alerts on confirmed campaigns) and
    follow the bank with it, then process verdicts until stopped; a second Ctrl-C
    interrupts at once."""
    with ExitStack() as stack:
        # The bank is followed even when the index is not linked to it: the processor
        # needs every reference it may disable.
        runtime = load_runtime(settings, follow_unlinked=True)
        stack.callback(runtime.close)
        processor = FeedbackProcessor.open(
            settings.kafka,
            runtime.detector.encoder,
            settings.disable_after_false_positives,
            detector=runtime.detector,
            campaigns=settings.campaigns,
            lookback_s=settings.feedback_lookback_s,
            recent_max_bytes=settings.feedback_recent_max_bytes,
            bank=runtime.bank,
        )
        stack.callback(processor.close)
        stop_on_signals(processor.stop)
        processor.run()
