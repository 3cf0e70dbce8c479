"""The judge's output schema, generated from the taxonomy (enums for categories and subtypes)."""

from __future__ import annotations

from quantmedic.taxonomy.model import NO_ERROR, Taxonomy

SCHEMA_NAME = "step_verdict"
SECTION_KEY = "first_wrong_section"


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


def thinking_output_schema(taxonomy: Taxonomy) -> dict:
    """JSON Schema of one answer about a window of a thinking's sections: ``first_wrong_section``
    instead of ``first_wrong_step`` (that it is one of the window's sections is checked after parsing)."""
    schema = judge_output_schema(taxonomy)
    properties = {key: value for key, value in schema["properties"].items() if key != "first_wrong_step"}
    properties = {"explanation": {"type": "string", "description": "What is wrong in the first wrong section, "
                                                                   "briefly."},
                  SECTION_KEY: {"type": "integer", "minimum": -1, "description": (
                      "Number of the first wrong section of this window; -1 if none of its sections is wrong.")},
                  **{k: v for k, v in properties.items() if k != "explanation"}}
    required = [SECTION_KEY if key == "first_wrong_step" else key for key in schema["required"]]
    return {**schema, "properties": properties, "required": required}
