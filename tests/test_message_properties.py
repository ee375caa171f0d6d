"""The decoder's fast path and the full strict-JSON walk agree on every body (a property test).

:func:`sqjobs.message.decode` skips the walk of :func:`check_json_value` for
bodies :func:`_plainly_strict` says need none. Here hypothesis generates
bodies (NaN and Infinity literals, numbers too large, lone surrogates
escaped and raw, deep nesting around the limit, duplicate keys, control
characters, non-ASCII text, base64 or plain JSON) and checks that decoding
with the fast path and decoding with every value walked accept and refuse
the same bodies, with the same values and the same reasons. The examples are
derandomized: the same bodies on every run.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sqjobs import message
from sqjobs.errors import MalformedMessageError
from sqjobs.message import MAX_JSON_DEPTH, JobMessage, check_json_value, loads_strict

#: Deterministic, a few seconds: the same examples on every run, none remembered between runs.
SETTINGS = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Characters the generated strings draw from besides hypothesis' own: lone surrogates, controls, non-ASCII.
ODD_CHARACTERS = ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\x07", "\x1f", "\x7f", "\u2028", "é", "ß",
                  "\u65e5", "\U0001d11e", "\\", '"', "[", "{", "\\u"]

texts = st.lists(st.one_of(st.text(max_size=6), st.text(max_size=6), st.sampled_from(ODD_CHARACTERS)),
                 max_size=4).map("".join)
numbers = st.one_of(
    st.integers(), st.integers(min_value=-(10 ** 40), max_value=10 ** 40), st.floats(allow_nan=False),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN and Infinity: written as the literals json writes
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(texts, inner, max_size=4)), max_leaves=12)


@st.composite
def value_texts(draw: Callable[..., Any]) -> str:
    """The JSON text of one value: as json writes it, or a literal JSON or Python's parser treats specially."""
    kind = draw(st.sampled_from(["value"] * 12 + ["literal", "deep", "big", "raw control"]))
    if kind == "literal":
        return draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e308", "-0", "0.0",
                                     "1E-400", '"\\ud800"', '"\\udc00\\ud800"', '"\\ud83d\\ude00"', '"\\u0000"',
                                     '"\\\\u0041"', "[]", "{}", "true", "nul"]))
    if kind == "deep":
        depth = draw(st.integers(min_value=MAX_JSON_DEPTH - 4, max_value=MAX_JSON_DEPTH + 4)
                     | st.integers(min_value=0, max_value=2 * MAX_JSON_DEPTH))
        opener = draw(st.sampled_from(["[", '{"k":']))
        closer = "]" if opener == "[" else "}"
        return opener * depth + draw(st.sampled_from(["0", '"x"', "NaN", '"\\ud800"'])) + closer * depth
    if kind == "big":
        return draw(st.sampled_from(["", "-"])) + "9" * draw(st.sampled_from([19, 20, 400, 4300, 4301, 5000]))
    if kind == "raw control":
        return '"a' + draw(st.sampled_from(["\x00", "\x1f", "\n", "\t"])) + 'b"'
    return json.dumps(draw(values), ensure_ascii=draw(st.booleans()), allow_nan=True)


@st.composite
def bodies(draw: Callable[..., Any]) -> str:
    """A message body: an object of fields (some repeated, some of the wrong type), base64 or plain JSON."""
    fields = [("name", json.dumps(draw(st.sampled_from(["tasks.add"] * 6 + ["日本.job", "", "x\ud800"]))))]
    fields += draw(st.lists(st.tuples(st.sampled_from(["args", "kwargs", "headers", "id", "name", "v", "extra"]),
                                      value_texts()), max_size=2))
    fields += [("args", "[" + ",".join(draw(st.lists(value_texts(), max_size=3))) + "]"),
               ("kwargs", "{" + ",".join(f"{json.dumps(key)}:{text}" for key, text in
                                         draw(st.lists(st.tuples(texts, value_texts()), max_size=3))) + "}"),
               ("headers", "{" + ",".join(f"{json.dumps(key)}:{text}" for key, text in
                                          draw(st.lists(st.tuples(texts, value_texts()), max_size=2))) + "}")]
    fields = [fields[0], *(item for item in fields[1:] if draw(st.integers(0, 3)))]  # each may be left out
    order = draw(st.permutations(fields))
    separator = draw(st.sampled_from([",", ", ", ",\n "]))
    text = "{" + separator.join(f"{json.dumps(key)}:{value}" for key, value in order) + "}"
    if draw(st.booleans()):
        return text  # a plain JSON body (it may hold raw surrogates: a str body can)
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")


def outcome(decoding: Callable[[], JobMessage]) -> tuple[str, Any]:
    """What a decoding gave: the message's fields, or the reason it refused the body."""
    try:
        decoded = decoding()
    except MalformedMessageError as exc:
        return "refused", str(exc)
    return "decoded", (decoded.name, decoded.args, decoded.kwargs, decoded.id, decoded.extra, decoded.headers)


@SETTINGS
@given(bodies())
@example('{"name":"x","args":["\\ud800"]}')
@example('{"name":"x","headers":{"h":"\\udfff"}}')
@example('{"name":"x","args":' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}")
@example('{"name":"x","args":[' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "]}")
@example('{"name":"x","name":"y","args":[1e400]}')
@example('{"name":"x","v":NaN}')
@example('{"name":"x","v":' + "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1) + "}")
def test_the_fast_path_and_the_full_walk_decode_every_body_alike(body: str) -> None:
    fast = outcome(lambda: message.decode(body, "fallback-id"))
    walked = outcome(lambda: message._decode(body, "fallback-id", walk_all=True))
    assert fast == walked


@SETTINGS
@given(value_texts())
@example("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
@example("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
@example('{"k":' * (MAX_JSON_DEPTH + 1) + "0" + "}" * (MAX_JSON_DEPTH + 1))
@example('["\\ud800"]')
@example('["\ud800"]')
def test_what_the_fast_path_passes_the_walk_accepts(text: str) -> None:
    """The invariant of :func:`message._plainly_strict`, on any JSON value (not only a message's fields)."""
    try:
        value = loads_strict(text)
    except ValueError:
        return  # refused by the parser: no walk either way
    if message._plainly_strict(text):
        check_json_value(value, "value")  # TypeError here: the fast path would pass what the walk refuses
