"""fraud: the scam-message detection library (no Kafka in here).

Text normalization, the sentence encoder, the FAISS reference index, the attention
scorer, message/alert schemas, metrics definitions and the `fraud` CLI.
"""

__version__ = "0.1.0"
