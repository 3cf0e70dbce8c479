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
