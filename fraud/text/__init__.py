"""Text before it is embedded: normalization, character n-grams, the lexical model."""

from fraud.text.lexical import LEXICAL_WEIGHTS, LexicalModel
from fraud.text.ngrams import DEFAULT_NGRAM_RANGE, CharNgrams, mix, pair_cosines
from fraud.text.normalize import NORMALIZATION_VERSION, normalize

__all__ = (
    "DEFAULT_NGRAM_RANGE",
    "LEXICAL_WEIGHTS",
    "NORMALIZATION_VERSION",
    "CharNgrams",
    "LexicalModel",
    "mix",
    "normalize",
    "pair_cosines",
)
