"""The wire format: what other languages send must run, and what JSON cannot carry is refused."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest

from sqjobs.errors import InvalidJobIdError, MalformedMessageError, MessageTooLargeError
from sqjobs.message import (
    ID_MAX_CHARS,
    ID_RULE,
    MAX_JSON_DEPTH,
    JobMessage,
    check_json_value,
    check_size,
    decode,
    encode,
    glimpse,
    loads_strict,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_encode_is_base64_of_json_with_id_name_args_kwargs() -> None:
    body = encode(JobMessage(name="adder_job", args=[1, 2], kwargs={"x": "é"}, id="abc"))
    data = json.loads(base64.b64decode(body).decode("utf-8"))
    assert data["id"] == "abc" and data["name"] == "adder_job"
    assert data["args"] == [1, 2] and data["kwargs"] == {"x": "é"}


def test_round_trip() -> None:
    message = JobMessage(name="n", args=[1, [2, {"a": None}]], kwargs={"k": 1.5})
    assert decode(encode(message), "fallback") == message


def test_php_shaped_message_with_only_name_args_kwargs_decodes_with_the_broker_id() -> None:
    body = b64(json.dumps({"name": "adder_job", "args": [1, 2, 3], "kwargs": {}}))
    message = decode(body, "broker-id-1")
    assert (message.name, message.args, message.kwargs, message.id) == ("adder_job", [1, 2, 3], {}, "broker-id-1")


def test_an_empty_list_for_kwargs_means_no_keyword_arguments() -> None:
    # PHP's json_encode writes an empty array as [] (the seed talk's producer does exactly that).
    message = decode(b64(json.dumps({"name": "adder_job", "args": [1, 2], "kwargs": []})), "m")
    assert (message.args, message.kwargs) == ([1, 2], {})


def test_plain_json_body_is_accepted_and_missing_args_default_to_empty() -> None:
    message = decode('{"name": "ping"}', "m1")
    assert (message.args, message.kwargs) == ([], {})


def test_unknown_fields_are_ignored_but_kept_as_extra() -> None:
    message = decode(b64(json.dumps({"name": "n", "eta": 5, "future": {"x": 1}})), "m")
    assert message.name == "n"
    assert message.extra == {"eta": 5, "future": {"x": 1}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("%%% not base64 %%%", "neither base64 nor JSON"),
        (b64("not json at all"), "not valid JSON"),
        (base64.b64encode(b"\xff\xfe").decode(), "not UTF-8"),
        (b64("[1, 2]"), "not an object"),
        (b64('{"args": []}'), "no job 'name'"),
        (b64('{"name": "", "args": []}'), "no job 'name'"),
        (b64('{"name": "n", "args": {"a": 1}}'), "'args' is a JSON dict, not a list"),
        (b64('{"name": "n", "kwargs": [1]}'), "'kwargs' is a JSON list, not an object"),
        ('{"name": "n", "args": 5', "not valid JSON"),
    ],
)
def test_malformed_bodies_raise_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(MalformedMessageError) as caught:
        decode(body, "m")
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ([object()], {}, "argument 0"),
        ([1, {1: "int key"}], {}, "argument 1"),
        ([], {"when": math.nan}, "argument 'when'"),
        ([], {"items": [1, {2, 3}]}, "argument 'items'[1]"),
        ([b"bytes"], {}, "argument 0"),
    ],
)
def test_values_json_cannot_carry_raise_type_error_naming_the_argument(args: list, kwargs: dict,
                                                                        named: str) -> None:
    with pytest.raises(TypeError) as caught:
        encode(JobMessage(name="n", args=args, kwargs=kwargs))
    assert named in str(caught.value)


def test_tuples_become_lists() -> None:
    body = encode(JobMessage(name="n", args=[(1, 2)]))
    assert decode(body, "m").args == [[1, 2]]


def test_check_size_refuses_bodies_over_the_limit() -> None:
    check_size("x" * 100, 100)
    with pytest.raises(MessageTooLargeError, match="101 bytes.*limit of 100"):
        check_size("x" * 101, 100)


# -- a body is that message's problem, whatever it holds ----------------------------------------


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` lists, one inside the other."""
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # 100,000 levels: Python's JSON parser gives up with RecursionError.
        (b64('{"name": "n", "args": ' + nested(100_000) + "}"), "nested too deeply"),
        ('{"name": "n", "args": ' + nested(100_000) + "}", "nested too deeply"),
        # Deep enough to parse, deeper than .delay() accepts.
        (b64('{"name": "n", "args": [' + nested(600) + "]}"), "argument 0 is nested deeper than 500 levels"),
        (b64('{"name": "n", "future": ' + nested(600) + "}"), "field 'future' is nested deeper than 500 levels"),
        (b64('{"name": "n", "args": [NaN]}'), "holds NaN, which is not JSON"),
        (b64('{"name": "n", "args": [1, Infinity]}'), "holds Infinity, which is not JSON"),
        (b64('{"name": "n", "kwargs": {"x": -Infinity}}'), "holds -Infinity, which is not JSON"),
        (b64('{"name": "n", "args": [1e400]}'), "holds 1e400, a number too large for JSON"),
        (b64('{"name": "n", "args": ["a\\ud800b"]}'), "argument 0 holds a lone surrogate"),
        (b64('{"name": "n", "kwargs": {"\\udfff": 1}}'), "keyword argument '\\udfff' holds a lone surrogate"),
        (b64('{"name": "n\\udc00"}'), "field 'name' holds a lone surrogate"),
        (b64('{"name": "n", "args": [' + "7" * 5000 + "]}"), "cannot be read as JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("!sqjobs-undecodable: stored message 7 cannot be read: its body is not UTF-8 text",
         "stored message 7 cannot be read"),
        (None, "body cannot be read: AttributeError"),
    ],
)
def test_any_bad_body_raises_malformed_message_error_with_a_reason(body: object, reason: str) -> None:
    with pytest.raises(MalformedMessageError) as caught:
        decode(body, "m")  # type: ignore[arg-type]
    assert reason in caught.value.reason
    assert len(caught.value.reason) < 400, "a reason fit for one line"


@pytest.mark.faults
def test_values_nested_up_to_the_limit_go_both_ways() -> None:
    deep: list = [1]
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = [deep]
    assert decode(encode(JobMessage(name="n", args=[deep])), "m").args == [deep]
    with pytest.raises(TypeError, match="argument 0 is nested deeper than 500 levels"):
        encode(JobMessage(name="n", args=[[deep]]))


@pytest.mark.faults
def test_a_value_5000_levels_deep_or_holding_itself_is_a_type_error_not_a_recursion_error() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError, match=r"^the result is nested deeper than 500 levels"):
        check_json_value(deep, "the result")
    loop: dict = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(TypeError, match=r"^argument 'x' is nested deeper than 500 levels"):
        encode(JobMessage(name="n", kwargs={"x": loop}))


def test_a_lone_surrogate_is_refused_at_delay_naming_the_argument() -> None:
    with pytest.raises(TypeError, match=r"argument 1\[0\] holds a lone surrogate '\\ud800' at position 2"):
        encode(JobMessage(name="n", args=["ok", ["ab\ud800"]]))
    with pytest.raises(TypeError, match=r"argument 0 has a key that holds a lone surrogate"):
        encode(JobMessage(name="n", args=[{"\udc80": 1}]))


def test_loads_strict_refuses_what_json_does_not_have() -> None:
    assert loads_strict('{"a": [1.5, null]}') == {"a": [1.5, None]}
    for text, why in [("[NaN]", "holds NaN"), (nested(100_000), "nested too deeply"), ("[", "is not valid JSON")]:
        with pytest.raises(ValueError, match=why):
            loads_strict(text)


@pytest.mark.parametrize(
    ("job_id", "reason"),
    [
        ("x" * 200, "'id' is 200 characters, over 128"),
        ("abc\u0000def", "'id' holds control character U+0000 at position 3"),
        ("line\nbreak", "'id' holds control character U+000A at position 4"),
        ("\ud800", "field 'id' holds a lone surrogate '\\ud800' at position 0"),
        ("orders/42", f"'id' holds '/' at position 6; {ID_RULE}"),  # the dashboard's /jobs/ID could not show it
        ("a b", f"'id' holds ' ' at position 1; {ID_RULE}"),
        ("../x", f"'id' starts with '.'; {ID_RULE}"),
        ("-x", f"'id' starts with '-'; {ID_RULE}"),  # a command would read it as an option
    ],
)
def test_a_foreign_id_the_status_row_cannot_key_is_malformed(job_id: str, reason: str) -> None:
    body = b64(json.dumps({"id": job_id, "name": "adder_job", "args": [1]}))
    with pytest.raises(MalformedMessageError) as caught:
        decode(body, "broker-id")
    assert reason in caught.value.reason


def test_ids_up_to_the_limit_and_beyond_ascii_are_kept() -> None:
    uuid = "9f1c0a2e-5b7d-4c1e-8f00-123456789abc"  # the shape of an SQS message id, the fallback
    for job_id in ("x" * ID_MAX_CHARS, "pedido-ñandú-注文-1", uuid, "order:42@shop.v2"):
        assert decode(b64(json.dumps({"id": job_id, "name": "n"})), "m").id == job_id


def test_a_producer_cannot_send_an_id_a_worker_would_refuse() -> None:
    with pytest.raises(InvalidJobIdError, match="is 129 characters, over 128"):
        encode(JobMessage(name="n", id="y" * 129))
    with pytest.raises(InvalidJobIdError, match="control character U\\+0009"):
        encode(JobMessage(name="n", id="tab\there"))
    with pytest.raises(InvalidJobIdError, match=f"job id 'a/b' holds '/' at position 1; {re.escape(ID_RULE)}"):
        encode(JobMessage(name="n", id="a/b"))


@pytest.mark.parametrize(("body", "job_id", "name", "problem"), [
    (b64('{"id": "a1", "name": "add", "args": [1]}'), "a1", "add", None),
    (b64('{"id": "a1", "name": "add", "args": "x"}'), "a1", "add", "'args' is a JSON str, not a list"),
    ('{"name": "add", "kwargs": 3}', "mid-1", "add", "'kwargs' is a JSON int, not an object"),
    ('{"id": "a/1", "name": "add"}', None, "add", "'id' holds '/'"),
    ('{"id": "a1", "name": "add\\nFAKE LOG LINE"}', "a1", '"add\\nFAKE LOG LINE"', None),
    ('{"id": "a1", "name": "add\\ud800", "args": 1}', "a1", '"add\\ud800"', "not a list"),
    ('{"id": "a1", "name": "add", "args": [NaN]}', "a1", "add", "NaN"),
    (b64('["add"]'), None, None, "body is JSON list, not an object"),
    ("not base64 at all!", None, None, "neither base64 nor JSON"),
])
def test_glimpse_reads_what_it_can_of_a_malformed_body(body: str, job_id: str | None, name: str | None,
                                                       problem: str | None) -> None:
    seen = glimpse(body, "mid-1")
    assert (seen.id, seen.name) == (job_id, name)
    if problem is None:
        assert seen.problem is None and seen.message is not None
    else:
        assert seen.problem is not None and problem in seen.problem, seen.problem
        assert seen.message is None
