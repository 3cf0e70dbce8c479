"""The judge's output schema, generated from the taxonomy (enums for categories and subtypes)."""

from __future__ import annotations

from quantmedic.taxonomy.model import NO_ERROR, Taxonomy

SCHEMA_NAME = "step_verdict"


def judge_output_schema(taxonomy: Taxonomy) -> dict:
    """JSON Schema of one judge answer. Key order puts the explanation before the decision.

    The pairing of subtype and category, and the step index's upper bound, depend on the item and
    are checked after parsing (:mod:`quantmedic.judge.validate`), not by the schema.
    """
    return {
        "type": "object",
        "properties": {
            "explanation": {"type": "string", "description": "What is wrong in the first wrong step, briefly."},
            "first_wrong_step": {"type": "integer", "minimum": -1,
                                 "description": "0-based number of the first wrong step; -1 if none is wrong."},
            "category": {"type": "string", "enum": [*taxonomy.category_ids, NO_ERROR]},
            "subtype": {"type": "string", "enum": [*taxonomy.subtype_ids, NO_ERROR]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["explanation", "first_wrong_step", "category", "subtype", "confidence"],
        "additionalProperties": False,
    }
