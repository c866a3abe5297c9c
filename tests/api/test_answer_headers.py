"""What a model's answer may carry to the client in headers, held to the shapes a request's are: it comes
from the model's code (a security review found custom attributes of 60 KB and bytes that are not ASCII
relayed as they came)."""

from __future__ import annotations

import pytest

from zeroscale.api.invoke import answer_attributes, answer_type
from zeroscale.errors import ModelError


def test_custom_attributes_within_the_shape_are_relayed() -> None:
    assert answer_attributes(None, 200) is None
    assert answer_attributes(b"trace=1; score=0.9", 200) == b"trace=1; score=0.9"
    assert answer_attributes(b"a" * 1024, 200) == b"a" * 1024


@pytest.mark.parametrize("value", [b"a" * 1025, b"attr\x80\xff\xfe", b"x" * 60_000])
def test_custom_attributes_past_the_shape_are_a_model_error(value: bytes) -> None:
    with pytest.raises(ModelError, match="Custom-Attributes that are not at most 1024 ASCII") as err:
        answer_attributes(value, 200)
    assert err.value.original_status == 200


def test_a_content_type_past_the_shape_is_a_model_error_too() -> None:
    assert answer_type(None, 200) == b"application/octet-stream"
    with pytest.raises(ModelError, match="Content-Type that is not at most 1024 ASCII"):
        answer_type(b"text/plain; charset=\xe9", 200)
