import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.model import default_taxonomy, default_taxonomy_text, load_taxonomy


def test_default_taxonomy_is_the_reference_studys():
    taxonomy = default_taxonomy()
    assert {c.id: [s.id for s in c.subtypes] for c in taxonomy.categories} == {
        "conceptual": ["conceptual_misunderstanding", "contextual_oversight"],
        "method": ["procedural_error", "formula_rule_error"],
        "execution": ["computational_error", "symbolic_manipulation_error"],
        "reasoning": ["logical_reasoning_error"],
    }
    for category in taxonomy.categories:
        for entry in (category, *category.subtypes):
            assert entry.definition.strip() and entry.example.strip() and entry.name.strip()
    assert taxonomy.parent_of("formula_rule_error") == "method"


def test_a_users_copy_loads(tmp_path):
    data = yaml.safe_load(default_taxonomy_text())
    data["name"] = "mine"
    data["categories"].append({"id": "notation", "name": "Notation", "definition": "Wrong notation.",
                               "example": "Writing f^-1 for 1/f.", "subtypes": [
                                   {"id": "notation_error", "name": "Notation error", "definition": "d",
                                    "example": "e"}]})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    taxonomy = load_taxonomy(path)
    assert taxonomy.name == "mine" and taxonomy.parent_of("notation_error") == "notation"


@pytest.mark.parametrize("edit, field, line_text", [
    (lambda d: d["categories"][1]["subtypes"][0].pop("definition"), "categories.1.subtypes.0.definition", None),
    (lambda d: d["categories"][2].update(id="Bad Id"), "categories.2.id", "id: Bad Id"),
    (lambda d: d["categories"][3].update(subtypes=[]), "categories.3.subtypes", "subtypes: []"),
])
def test_broken_taxonomy_names_file_line_and_field(tmp_path, edit, field, line_text):
    data = yaml.safe_load(default_taxonomy_text())
    edit(data)
    text = yaml.safe_dump(data, sort_keys=False)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_taxonomy(path)
    error = info.value
    assert error.path == str(path) and error.field == field
    assert str(path) in str(error) and field in str(error)
    if line_text:
        assert error.line is not None and line_text in text.splitlines()[error.line - 1]


def test_duplicate_and_reserved_ids_are_refused(tmp_path):
    data = yaml.safe_load(default_taxonomy_text())
    data["categories"][1]["subtypes"][0]["id"] = "computational_error"
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="computational_error.*used twice"):
        load_taxonomy(path)
    data = yaml.safe_load(default_taxonomy_text())
    data["categories"][0]["id"] = "degenerate"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="reserved"):
        load_taxonomy(path)


def test_unparseable_taxonomy_gives_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncategories:\n  - id: [unclosed\n")
    with pytest.raises(InputError) as info:
        load_taxonomy(path)
    assert info.value.line is not None and str(path) in str(info.value)


def test_the_reasoning_taxonomy_loads_by_name_and_by_path():
    from quantmedic.judge.schema import judge_output_schema
    from quantmedic.taxonomy.model import RESERVED_IDS, SHIPPED_TAXONOMIES, shipped_taxonomy

    by_name = load_taxonomy("reasoning")
    path = Path(str(resources.files("quantmedic.taxonomy").joinpath(SHIPPED_TAXONOMIES["reasoning"])))
    assert load_taxonomy(path) == by_name == shipped_taxonomy("reasoning") and by_name.name == "quantmedic-reasoning"
    assert load_taxonomy("default") == default_taxonomy()
    ids = [*by_name.category_ids, *by_name.subtype_ids]
    assert len(ids) == len(set(ids)) and not set(ids) & RESERVED_IDS
    # the errors peculiar to long chains of thought are all there
    assert {"abandoned_correct_result", "false_verification", "endless_rechecking", "premature_conclusion",
            "solution_contradicts_thinking", "lost_constraint", "hallucinated_fact"} <= set(by_name.subtype_ids)
    for category in by_name.categories:
        for entry in (category, *category.subtypes):
            assert len(entry.definition.split()) >= 8 and any(c.isdigit() for c in entry.example), entry.id
    schema = judge_output_schema(by_name)
    assert set(by_name.subtype_ids) <= set(json.dumps(schema).replace('"', " ").split())


def test_a_file_named_like_a_shipped_taxonomy_wins_and_a_missing_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(default_taxonomy_text())
    data["name"] = "local-reasoning"
    Path("reasoning").write_text(yaml.safe_dump(data))
    assert load_taxonomy("reasoning").name == "local-reasoning"
    with pytest.raises(InputError, match="no such taxonomy file"):
        load_taxonomy("reasonin")


def test_taxonomy_command_prints_and_checks_the_shipped_ones():
    import typer
    from typer.testing import CliRunner

    from quantmedic.pipelines.cli.info import commands

    app = typer.Typer()
    commands.register(app)
    app.command("noop")(lambda: None)  # two commands: `taxonomy` stays a subcommand
    shown = CliRunner().invoke(app, ["taxonomy", "reasoning"])
    assert shown.exit_code == 0 and yaml.safe_load(shown.output)["name"] == "quantmedic-reasoning"
    assert yaml.safe_load(CliRunner().invoke(app, ["taxonomy"]).output)["name"] == "quantmedic-default"
    checked = CliRunner().invoke(app, ["taxonomy", "--check", "reasoning"])
    assert checked.exit_code == 0 and "6 categories, 15 subtypes" in checked.output
    refused = CliRunner().invoke(app, ["taxonomy", "nope"])
    assert refused.exit_code != 0 and "not a shipped taxonomy" in str(refused.exception) + refused.output
