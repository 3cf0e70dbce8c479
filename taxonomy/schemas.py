"""JSON Schemas of the shared records, exported from the pydantic models.

The committed copies in ``schemas/`` document the file formats; ``quantmedic schema`` writes them
anew, and a test keeps the copies in step with the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from .records import Attempt, PreferencePair, Problem, Review, Verdict

RECORDS = {"problem": Problem, "attempt": Attempt, "verdict": Verdict, "review": Review,
           "preference_pair": PreferencePair}


def record_schemas() -> dict[str, dict]:
    """``{name: JSON Schema}`` for every shared record type."""
    schemas = {}
    for name, model in RECORDS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://quantmedic.dev/schemas/{name}.json"
        schemas[name] = schema
    return schemas


def write_schemas(folder: str | Path) -> list[Path]:
    """Write ``<name>.schema.json`` for each record into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in record_schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
