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
