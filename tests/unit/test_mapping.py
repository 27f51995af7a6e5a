"""compile_mappings: standard, static and template mappings of one source row."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.models import SyncConfiguration
from service.runner.mapping import MappingError, RowMapper, compile_mappings


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
