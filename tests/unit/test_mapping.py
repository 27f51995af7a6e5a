"""compile_mappings: standard, static and template mappings of one source row."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.models import SyncConfiguration, TemplateMapping
from service.core.templates import parse_template
from service.runner.mapping import (
    MappingError,
    RowMapper,
    compile_mappings,
    renders_templates,
    unchanged_over,
)


def mapper(*mappings: dict[str, Any]) -> RowMapper:
    return compile_mappings(SyncConfiguration.model_validate({"mappings": list(mappings)}))


def test_standard_mapping_renames_a_column() -> None:
    apply = mapper({"from": "email", "to": "email_address"})
    assert apply({"email": "a@x", "other": 1}) == {"email_address": "a@x"}


def test_columns_mapped_to_their_own_names_give_those_columns_only() -> None:
    apply = mapper({"from": "id", "to": "id"}, {"from": "email", "to": "email"})
    assert apply({"email": "a@x", "id": 1}) == {"email": "a@x", "id": 1}
    assert apply({"id": 1, "email": "a@x", "other": 2}) == {"id": 1, "email": "a@x"}
    assert apply({"id": 1}) == {"id": 1, "email": None}


def test_rows_need_no_mapping_when_every_column_keeps_its_name_in_any_order() -> None:
    same = mapper({"from": "id", "to": "id"}, {"from": "email", "to": "email"})
    projected = {"email": "a@x", "id": 1}  # the columns read, in another order
    assert unchanged_over(same, ("email", "id"))
    assert same(projected) is projected  # what skipping the mapper stands for
    assert not unchanged_over(same, ("email", "id", "other"))  # a column read but not sent
    renamed = mapper({"from": "id", "to": "id"}, {"from": "email", "to": "mail"})
    assert not unchanged_over(renamed, ("email", "id"))
    static = mapper({"from": "id", "to": "id"}, {"type": "static", "to": "kind", "value": "u"})
    assert not unchanged_over(static, ("id",))


def test_standard_mapping_keeps_the_value_type() -> None:
    apply = mapper({"type": "standard", "from": "n", "to": "count"})
    assert apply({"n": 3}) == {"count": 3}


def test_a_missing_source_column_maps_to_none() -> None:
    apply = mapper({"from": "email", "to": "email_address"})
    assert apply({"id": 1}) == {"email_address": None}


def test_static_mapping_writes_its_value_whatever_the_row() -> None:
    apply = mapper({"type": "static", "to": "source", "value": "crm"})
    assert apply({"id": 1}) == {"source": "crm"}
    assert apply({}) == {"source": "crm"}


def test_static_mapping_keeps_non_string_values() -> None:
    apply = mapper({"type": "static", "to": "tags", "value": ["a", 1]})
    assert apply({}) == {"tags": ["a", 1]}


def test_template_mapping_renders_liquid_with_the_row() -> None:
    apply = mapper({"type": "template", "to": "full_name", "template": "{{ first }} {{ last }}"})
    assert apply({"first": "Ada", "last": "Lovelace"}) == {"full_name": "Ada Lovelace"}


def test_template_mapping_applies_filters() -> None:
    apply = mapper({"type": "template", "to": "shout", "template": "{{ name | upcase }}"})
    assert apply({"name": "ada"}) == {"shout": "ADA"}


def test_all_mapping_types_combine_in_one_row() -> None:
    apply = mapper(
        {"from": "email", "to": "email_address"},
        {"type": "static", "to": "source", "value": "crm"},
        {"type": "template", "to": "full_name", "template": "{{ first }} {{ last }}"},
    )
    row = {"email": "a@x", "first": "Ada", "last": "L"}
    assert apply(row) == {"email_address": "a@x", "source": "crm", "full_name": "Ada L"}


def test_a_template_failing_on_a_row_raises_mapping_error_naming_the_field() -> None:
    apply = mapper({"type": "template", "to": "ratio", "template": "{{ n | divided_by: 0 }}"})
    with pytest.raises(MappingError, match="'ratio'"):
        apply({"n": 1})


def test_a_template_can_read_a_column_named_self() -> None:
    apply = mapper({"type": "template", "to": "out", "template": "{{ self }}"})
    assert apply({"self": "me"}) == {"out": "me"}


# --- bounded templates ----------------------------------------------------------------------

BOMBS = {
    "nested loops of 100,000": (
        "{% for i in (1..100000) %}{% for j in (1..100000) %}x{% endfor %}{% endfor %}",
        "loop iteration limit",
    ),
    "many loops in a row": ("{% for i in (1..9999) %}{% endfor %}" * 200, "loop iterations"),
    "output": ("{% for i in (1..9999) %}" + "x" * 100 + "{% endfor %}", "output stream limit"),
    "doubling a string": (
        "{% assign s = 'xxxxxxxx' %}" + "{% assign s = s | append: s %}" * 40,
        "local namespace limit",
    ),
    "filters in a loop": (
        "{% assign a = 'a,b,c,d' | split: ',' %}{% for i in (1..9999) %}"
        + "{{ a | join: '-' | split: '-' | join: ',' | size | modulo: 1 }}" * 20
        + "{% endfor %}",
        "CPU time",
    ),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_template_beyond_a_limit_rejects_the_row_with_the_reason(name: str) -> None:
    source, reason = BOMBS[name]
    assert parse_template(source) is None  # it parses: only rendering can tell
    apply = mapper({"from": "id", "to": "id"}, {"type": "template", "to": "x", "template": source})
    assert renders_templates(apply)
    with pytest.raises(MappingError, match=reason):
        apply({"id": 1})


def test_parse_template_names_what_is_wrong() -> None:
    assert parse_template("{{ first }} {{ last | upcase }}") is None
    assert parse_template("{% if %}") == "missing expression"
    too_deep = "{% if a %}" * 12 + "x" + "{% endif %}" * 12
    assert "nesting" in (parse_template(too_deep) or "")
    assert "at most" in (parse_template("x" * 10_001) or "")


def test_a_template_that_does_not_parse_rejects_each_row() -> None:
    too_deep = "{% if a %}" * 12 + "x" + "{% endif %}" * 12  # stored before the limit
    stored = TemplateMapping.model_construct(type="template", to="x", template=too_deep)
    configuration = SyncConfiguration.model_construct(mode="upsert", mappings=[stored])
    apply = compile_mappings(configuration)
    with pytest.raises(MappingError, match="invalid: block nesting limit"):
        apply({"id": 1})


def test_mappers_without_templates_do_not_ask_for_a_thread() -> None:
    assert not renders_templates(mapper({"from": "id", "to": "id"}))
    assert not renders_templates(mapper({"type": "static", "to": "s", "value": 1}))
