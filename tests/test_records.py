import json
from pathlib import Path

import jsonschema
import pytest

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt, Problem, Quantization, Verdict
from quantmedic.taxonomy.schemas import record_schemas

SCHEMAS = Path(__file__).resolve().parents[1] / "taxonomy" / "schemas"


def make_attempt(**overrides) -> Attempt:
    fields = dict(problem=Problem(text="What is 2 + 3?", reference_answer="5"), steps=("2 + 3 = 6", "A: 6"),
                  correct=False, model="tiny", quantization=Quantization(method="gptq", bits=4, group_size=128))
    fields.update(overrides)
    return Attempt(**fields)


def test_ids_are_content_derived_and_stable():
    a, b = make_attempt(), make_attempt()
    assert a.id == b.id and a.id.startswith("a-") and a.problem.id.startswith("p-")
    assert make_attempt(steps=("2 + 3 = 5", "A: 5")).id != a.id
    assert make_attempt(quantization=Quantization(method="awq", bits=4)).id != a.id
    # pinned: a change of the id recipe would orphan every stored record
    assert Problem(text="What is 2 + 3?").id == "p-4e380604e1fe79f0"


def test_verdict_roundtrips_through_jsonl(tmp_path):
    verdict = Verdict(attempt=make_attempt(), status="ok", first_wrong_step=0, category="execution",
                      subtype="computational_error", explanation="2 + 3 is 5", confidence=0.9,
                      judge_model="m", taxonomy="t@1", config="cfg-1")
    path = write_records(tmp_path / "v.jsonl", [verdict])
    assert read_records(path, Verdict) == [verdict]
    assert Verdict(**{**verdict.model_dump(), "id": ""}).id == verdict.id


def test_bad_jsonl_lines_name_file_line_and_field(tmp_path):
    good = make_attempt().model_dump_json()
    path = tmp_path / "a.jsonl"
    path.write_text(good + "\n\n" + good.replace('"steps":["2 + 3 = 6","A: 6"]', '"steps":["ok", "  "]') + "\n")
    with pytest.raises(InputError) as info:
        read_records(path, Attempt)
    assert (info.value.line, info.value.field) == (3, "steps")
    path.write_text(good + "\n{not json\n")
    with pytest.raises(InputError, match=r"a\.jsonl:2: not valid JSON"):
        read_records(path, Attempt)


@pytest.mark.parametrize("name", ["problem", "attempt", "verdict", "review"])
def test_committed_schemas_match_the_models(name):
    committed = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    assert committed == record_schemas()[name], "run `quantmedic schema taxonomy/schemas` and commit"


def test_schema_validates_a_real_record_and_rejects_a_broken_one():
    schema = record_schemas()["attempt"]
    record = json.loads(make_attempt().model_dump_json())
    jsonschema.validate(record, schema)
    del record["problem"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(record, schema)
