"""JSON Schemas of the shared records, exported from the pydantic models.

The committed copies in ``schemas/`` document the file formats; ``quantmedic schema`` writes them
anew, and a test keeps the copies in step with the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from .jsonl import write_atomic
from .outputs import check_output_folder
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
    """Write ``<name>.schema.json`` for each record into ``folder`` (created if missing; each file atomically).
    A ``folder`` that is a file, or a schema name taken by a folder, is an :class:`InputError` before anything is
    written."""
    folder = Path(folder)
    check_output_folder(folder, flag="FOLDER", files=[f"{name}.schema.json" for name in RECORDS])
    written = []
    for name, schema in record_schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        written.append(write_atomic(folder / f"{name}.schema.json", [text]))
    return written
