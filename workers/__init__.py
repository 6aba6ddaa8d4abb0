"""The processes that move data: the scoring worker, the producer, the demo, a local broker."""
