"""fraud: the scam-message detection library (no Kafka in here).

Text normalization, the sentence encoder, the FAISS reference index, the attention
scorer, message/alert schemas, metrics definitions and the `fraud` CLI.
"""

import os

__version__ = "0.1.0"

# torch and FAISS each run their kernels on an OpenMP thread pool, and by default an idle
# OpenMP thread spins for a while before it sleeps. In the worker the encoder's threads
# share 2 cores with its main thread, the Kafka client's threads and, on a laptop, the
# broker: spinning threads take the CPU those need, and torch's threads wait on each other
# at every operation. Set before torch or FAISS is loaded (OpenMP reads it once); a value
# already in the environment wins. Measured with `fraud bench` (README, Performance).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch's bf16 kernels on CPU (oneDNN, under ideep) compile and cache a kernel per input
# shape in two caches of 1,024 entries each by default, and the encoder meets a new shape
# with each new (chunk rows, padded width): a worker's memory rose in steps whenever a
# load spike brought bigger batches, 210 MiB from the first minute to the eighth in a
# 10-minute `fraud soak` (11% of its RSS). With both caches at 64 entries, encoding 25,000
# UCI texts in random batches (1 to 5, and 1 to 64 three times in ten) grew RSS by 9 MiB
# after the first 3,600 texts instead of 92; CPU time was the same for batches of 64 and
# about a fifth more for batches of 1 to 5 (kernels rebuilt). Read when torch loads; a
# value already in the environment wins (README, Reliability and security, the soak).
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
os.environ.setdefault("LRU_CACHE_CAPACITY", "64")
