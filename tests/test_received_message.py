"""ReceivedMessage crosses the pipe to the job process as its declared fields, every one of them."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

import pytest

from sqjobs.brokers.base import ReceivedMessage, pickled_by_fields


def through_a_pipe(value: Any) -> Any:
    """``value`` sent through a real pipe (pickled one end, unpickled the other), as the worker sends messages."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    with reader, writer:
        writer.send(value)
        return reader.recv()


def unlike_defaults(cls: type) -> dict[str, Any]:
    """A value for each declared field of ``cls``, none equal to a default, each telling its field apart."""
    made: dict[str, Any] = {}
    for declared in fields(cls):
        kind = str(declared.type)
        if "bool" in kind:
            made[declared.name] = True
        elif "int" in kind:
            made[declared.name] = 7
        elif "float" in kind:
            made[declared.name] = 1700000000.25
        elif "dict" in kind:
            made[declared.name] = {f"{declared.name}-attribute": "value"}
        else:
            made[declared.name] = f"{declared.name}-text"
    return made


def test_every_declared_field_crosses_the_pipe() -> None:
    message = ReceivedMessage(**unlike_defaults(ReceivedMessage))
    received = through_a_pipe(message)
    assert type(received) is ReceivedMessage
    for declared in fields(ReceivedMessage):
        assert getattr(received, declared.name) == getattr(message, declared.name), declared.name
    assert message.__reduce__() == (ReceivedMessage, tuple(getattr(message, item.name) for item in fields(message)))


@dataclass(slots=True)
class TracedMessage(ReceivedMessage):
    """A message with a field of its own, declared after the others."""

    trace_id: str = ""
    hops: list[str] = field(default_factory=list)


def test_a_subclass_with_fields_of_its_own_crosses_the_pipe_whole() -> None:
    message = TracedMessage(**unlike_defaults(ReceivedMessage), trace_id="t-1", hops=["a", "b"])
    received = through_a_pipe(message)
    assert type(received) is TracedMessage
    assert received == message
    assert (received.trace_id, received.hops) == ("t-1", ["a", "b"])


#: ReceivedMessage as it would be with one field more: the fields it declares, then ``region``.
WithRegion = pickled_by_fields(make_dataclass(
    "WithRegion", [(item.name, item.type, item) for item in fields(ReceivedMessage)] + [("region", str, "")],
    slots=True, namespace={"__module__": __name__}))


def test_a_field_added_to_the_declaration_crosses_the_pipe_with_no_other_change() -> None:
    values = {**unlike_defaults(ReceivedMessage), "region": "eu-west-1"}
    message = WithRegion(**values)
    received = through_a_pipe(message)
    assert type(received) is WithRegion
    assert {name: getattr(received, name) for name in values} == values


def test_a_field_the_constructor_does_not_take_in_order_is_refused_at_declaration() -> None:
    Keyworded = make_dataclass("Keyworded", [("queue", str), ("body", str, field(kw_only=True))], slots=True)
    with pytest.raises(TypeError, match=r"Keyworded\.body is not a positional constructor argument"):
        pickled_by_fields(Keyworded)
