"""quantmedic.taxonomy: the error taxonomy (data), the shared records and their JSON Schemas."""

from .errors import InputError
from .model import DEGENERATE, NO_ERROR, Category, Subtype, Taxonomy, default_taxonomy, load_taxonomy
from .records import (Attempt, JudgeAnswer, JudgeClaim, Problem, Quantization, Review, Sampling, Usage, Verdict,
                      content_id)

__all__ = ["DEGENERATE", "NO_ERROR", "Attempt", "Category", "InputError", "JudgeAnswer", "JudgeClaim", "Review", "Problem", "Quantization",
           "Sampling", "Subtype", "Taxonomy", "Usage", "Verdict", "content_id", "default_taxonomy", "load_taxonomy"]
