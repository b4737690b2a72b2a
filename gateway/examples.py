"""`gateway check --examples`: run the worked examples inside mapping files.

Each example feeds an operation a request document and checks the provider
request it renders; then feeds it a provider response and checks the unified
output. So the examples taken from a provider's documentation keep the
mapping honest as it changes.
"""

from typing import Any

import msgspec
from jmespath import Options

from .cursor import Position
from .expressions import strip_nulls
from .functions import Functions
from .mapping import ExampleSpec, Provider
from .operation import Operation, TranslationError, query_pairs
from .paging import page_document
from .unify import UnifyError


def check(provider: Provider) -> tuple[int, list[str]]:
    """How many examples ran, and what failed (empty: all passed)."""
    ran, failures = 0, []
    for obj in provider.objects.values():
        for ops in obj.operations.values():
            for op in ops:
                for i, example in enumerate(op.spec.examples):
                    ran += 1
                    label = f"{provider.source}: {op.key}.examples[{i}]" + (f" ({example.name})" if example.name else "")
                    failures += [f"{label}: {problem}" for problem in _run(provider, op, example)]
    return ran, failures


def _run(provider: Provider, op: Operation, example: ExampleSpec) -> list[str]:
    context = example.input.get("context", {})
    options = Options(custom_functions=Functions(provider.values, context))
    strict = Options(custom_functions=Functions(provider.values, context, strict=True, passthrough=provider.passthrough))
    doc: dict[str, Any] = {"query": {}, "context": context, **example.input}
    if op.verb == "list":
        paging = op.spec.paging
        doc.setdefault("page", page_document(paging, Position(), min(50, paging.max_limit)))
    problems = []
    try:
        if not op.applies(doc, strict):
            problems.append("its input does not meet this alternative's `when`")
        if example.request is not None:
            problems += _compare_request(example, op.request(doc, strict))
        if example.response is not msgspec.UNSET:
            problems += _compare_output(op, example, options)
    except (TranslationError, UnifyError) as exc:
        problems.append(str(exc))
    return problems


def _differs(what: str, expected: Any, actual: Any) -> list[str]:
    return [] if expected == actual else [f"{what}: expected {expected!r}, got {actual!r}"]


def _compare_request(example: ExampleSpec, actual) -> list[str]:
    want = example.request
    problems = []
    if want.method is not None:
        problems += _differs("method", want.method, actual.method)
    if want.path is not None:
        problems += _differs("path", want.path, actual.path)
    if want.query is not None:
        problems += _differs("query", sorted(query_pairs(want.query)), sorted(actual.query))
    if want.headers is not None:
        problems += _differs("headers", want.headers, actual.headers)
    if want.body is not msgspec.UNSET:
        problems += _differs("body", want.body, actual.body)
    return problems


def _unified(op: Operation, record: Any, options: Options, body: Any) -> Any:
    return strip_nulls(msgspec.to_builtins(op.unify(record, options, remote_data=False, body=body)))


def _compare_output(op: Operation, example: ExampleSpec, options: Options) -> list[str]:
    body = example.input.get("body")
    if op.verb == "list":
        records = op.records.search(example.response, options=options)
        if not isinstance(records, list):
            return [f"`records` finds no array in the response, but {records!r}"]
        actual = [_unified(op, r, options, body) for r in records]
    else:
        actual = _unified(op, op.record.search(example.response, options=options), options, body)
    if example.output is msgspec.UNSET:
        return []
    return _differs("output", example.output, actual)
