"""The mapping-file schema, and loading a file into a compiled provider.

A mapping file says, for one provider, how each unified operation becomes a
provider request and how provider records become unified ones. The README's
"Mapping files" section is the operator's guide; this module is its grammar.
"""

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect
import yaml

# libyaml's loader where PyYAML has it: several times faster, and start-up is measured.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

from .errors import did_you_mean
from .expressions import ExpressionError, calls, compile_expression, compile_template, context_reads, leaves, reads
from .functions import DATE_FORMATS, Functions
from .models import OBJECTS, Model, nested_models
from .operation import Operation
from .unify import Unifier

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Verb = Literal["create", "list", "retrieve"]


class Spec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class AuthSpec(Spec):
    """How a connection's credentials authenticate it upstream."""

    type: Literal["api_key", "bearer", "basic", "oauth2", "none"]
    header: str = "Authorization"  # api_key: the header that carries the key
    credential: str = "api_key"  # api_key, bearer: the credentials entry to send
    # oauth2: where tokens come from (a connection's token_url overrides it), how
    # the client authenticates there (RFC 6749 2.3.1), and what it asks for.
    token_url: str | None = None
    grant: Literal["refresh_token", "client_credentials"] = "refresh_token"
    client_auth: Literal["basic", "body"] = "basic"
    scope: str | None = None


class PagingSpec(Spec):
    """How the provider pages a list; the unified cursor hides which."""

    style: Literal["offset", "page", "token", "link", "none"] = "none"
    max_limit: int = 100  # the most records the provider returns per call
    # page style: the provider's own page size, for a provider that takes none
    # per call (or ignores it): its pages are asked for by the number its size
    # gives, and served `limit` records at a time
    page_size: Annotated[int, msgspec.Meta(ge=1)] | None = None
    first_page: int = 1  # page style: the number of the first page
    next: str | None = None  # token, link styles: where the response names the next page
    # offset, page styles: how many provider records the page held, where `records`
    # unnests them (e.g. the payments inside a page of invoices); default: the records' count
    count: str | None = None
    # offset, page styles: whether the provider has records after this page
    # (`has_more`), so a last full page costs no call; null: judged by the count
    more: str | None = None


class CheckSpec(Spec):
    """What the provider needs of one value of the request document, checked
    before any call; a request that fails is a 422 naming the field or the
    context key to set. Keyed by the value's path: `body.currency`,
    `body.line_items[].value` (each element), `context.tax_code`."""

    # true, or an expression over the request document: required when it is true
    required: bool | str = False
    # other paths that may supply the value instead (a context key: a per-connection default)
    or_: list[str] = msgspec.field(default_factory=list, name="or")
    enum: list[Any] | None = None  # the only values the provider accepts
    pattern: str | None = None  # a regular expression a string must match whole
    why: str = ""  # the provider's reason, told to the caller


class OperationSpec(Spec):
    """One upstream call. Every expression reads the request document:
    `body` (the unified body), `id` (the path id), `query` (the unified query),
    `page` (`limit`, `offset`, `number`, `token`) and `context` (the connection's)."""

    path: str  # `{expression}` segments are filled in and URL-encoded
    method: Method = "GET"
    when: str | None = None  # alternatives: the first whose `when` is true serves
    query: Any = None  # template
    headers: Any = None  # template
    body: Any = None  # template
    record: str = "@"  # create, retrieve: where the record sits in the response
    records: str = "@"  # list: where the records sit in the response
    total: str | None = None  # list: the total count, where the provider gives one
    paging: PagingSpec = msgspec.field(default_factory=PagingSpec)
    # create: unified fields the provider stores but does not answer with;
    # the unified answer takes them from the request.
    echo: list[str] = []
    # Fields of the object's `unify` this operation's records read differently
    # (e.g. the kind of record a source lists), merged over the object's.
    unify: dict[str, Any] = {}
    checks: dict[str, CheckSpec] = {}  # what the provider needs, checked before the call
    examples: list["ExampleSpec"] = []


class ExampleRequest(Spec):
    """The provider request an example expects; parts left out are not compared."""

    method: Method | None = None
    path: str | None = None
    query: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    body: Any = msgspec.UNSET


class ExampleSpec(Spec):
    """A worked example, checked by `gateway check --examples`: the request
    document in, the provider request out; the provider response in, the
    unified output out (nulls left out)."""

    name: str = ""
    input: dict[str, Any] = {}  # body, id, query, page, context
    request: ExampleRequest | None = None
    response: Any = msgspec.UNSET
    output: Any = msgspec.UNSET


Alternatives = OperationSpec | list[OperationSpec]


class ObjectSpec(Spec):
    unify: dict[str, Any]  # unified field -> expression over one provider record
    create: Alternatives | None = None
    list: Alternatives | None = None  # several: walked one after the other
    retrieve: Alternatives | None = None


class ErrorsSpec(Spec):
    """Expressions over a provider's error body."""

    message: str = "message"
    code: str | None = None
    status: dict[str, int] = {}  # provider error code -> unified HTTP status


class LimitsSpec(Spec):
    """Bounds on the calls to one provider (seconds, counts, bytes)."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0  # between two reads of the answer
    total_timeout: float = 60.0  # one attempt, start to end
    max_connections: int = 100  # the provider's connection pool
    max_in_flight: int = 64  # calls under way per connection; more: 503 with Retry-After
    max_response_bytes: int = 16 * 1024 * 1024


class RetrySpec(Spec):
    """Retries of what is safe: a GET, a call that never reached the provider,
    a 429 or 503 (which the provider answers before doing anything)."""

    attempts: int = 3  # in all, the first included
    backoff: float = 0.1  # the first pause's upper bound; doubles each time, jittered
    max_backoff: float = 2.0
    budget: float = 10.0  # seconds for every attempt together


class BreakerSpec(Spec):
    """After `failures` failures in a row (5xx, timeouts, unreachable), calls to
    the provider fail fast with 503 for `reset_after` seconds, then one probes."""

    failures: int = 5
    reset_after: float = 30.0


class ContextKey(Spec):
    """A setting each connection gives the mapping, in its `context`."""

    description: str  # one line, for the operator who writes the connection
    type: Literal["string", "integer", "number", "boolean", "list", "object"] = "string"
    required: bool = False
    default: Any = None  # what an unset, not required key reads as


class MappingFile(Spec):
    provider: str
    base_url: str
    auth: AuthSpec
    context: dict[str, ContextKey] = {}  # every key the mapping reads, declared
    headers: dict[str, str] = {}  # sent on every call; reads `context` only
    errors: ErrorsSpec = msgspec.field(default_factory=ErrorsSpec)
    limits: LimitsSpec = msgspec.field(default_factory=LimitsSpec)
    retries: RetrySpec = msgspec.field(default_factory=RetrySpec)
    breaker: BreakerSpec = msgspec.field(default_factory=BreakerSpec)
    values: dict[str, dict[str, Any]] = {}  # named value maps: unified -> provider
    # value maps whose unknown values to_remote passes through as they are
    # (the provider's own codes); any other refuses them with a 422
    passthrough: list[str] = []
    # named templates, used as a leaf `$name` wherever a template may be
    fragments: dict[str, Any] = {}
    objects: dict[str, ObjectSpec] = {}


class MappingError(Exception):
    """A mapping file that cannot serve: names the file, the key and the reason."""

    def __init__(self, path: Path, key: str, reason: str):
        super().__init__(f"{path}: {key}: {reason}")


class ProviderObject(msgspec.Struct):
    operations: dict[str, tuple[Operation, ...]]


class Provider(msgspec.Struct):
    """A mapping file, compiled: what the request path runs."""

    name: str
    base_url: str
    auth: AuthSpec
    context: dict[str, ContextKey]
    headers: dict[str, Any]
    error_message: Any
    error_code: Any
    error_status: dict[str, int]
    values: dict[str, dict[str, Any]]
    passthrough: frozenset[str]
    objects: dict[str, ProviderObject]
    limits: LimitsSpec
    retries: RetrySpec
    breaker: BreakerSpec
    source: Path
    warnings: list[str] = []  # mistakes that do not stop it serving (`gateway check` prints them)

    def operations(self, obj: str, verb: str) -> tuple[Operation, ...]:
        found = self.objects.get(obj)
        return found.operations.get(verb, ()) if found else ()


def load(path: Path) -> Provider:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SafeLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(path, "$", f"cannot read YAML: {exc}") from None
    try:
        spec = msgspec.convert(raw, MappingFile)
    except msgspec.ValidationError as exc:
        key, reason = _schema_error(raw, str(exc))
        raise MappingError(path, key, reason + _schema_hint(key, reason)) from None
    try:
        return _compile(spec, path)
    except ExpressionError as exc:
        raise MappingError(path, exc.key, exc.reason) from None


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")


def _schema_error(raw: Any, message: str) -> tuple[str, str]:
    """The key and the reason of a schema error. msgspec writes every dict key
    as `[...]`; the real key goes back in, so the operator reads
    `$.objects.contacts.list`, not `$.objects[...].list`."""
    reason, _, at = message.partition(" - at `")
    at = at.rstrip("`").removeprefix("key` in `")  # `key` in: the key itself is wrong
    if not at.startswith("$"):
        return "$", reason
    key, node = "$", raw
    for match in _PATH_PART.finditer(at, 1):
        field, index = match.group(1), match.group(2)
        if field is not None:
            key += "." + field
            node = node.get(field) if isinstance(node, dict) else None
        elif index is not None:
            key += f"[{index}]"
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            name = _failing_entry(raw, node, message)
            if name is None:
                return key + at[match.start():], reason
            key += f".{name}"
            node = node[name]
    return key, reason


def json_schema() -> str:
    """A mapping file's JSON Schema, from the types that load it: what an editor
    checks as the operator types (mappings/mapping.schema.json holds it)."""
    schema = msgspec.json.schema(MappingFile)
    schema["title"] = "gateway mapping file"
    return msgspec.json.format(msgspec.json.encode(schema), indent=2).decode()


def _schema_hint(key: str, reason: str) -> str:
    """What the schema allows where a value or key is wrong: an enum's values,
    the nearest known key."""
    kind = _type_at(key)
    enum = re.match(r"Invalid enum value ", reason)
    unknown = re.match(r"Object contains unknown field `(.+)`", reason)
    if enum and isinstance(kind, msgspec.inspect.LiteralType):
        return "; valid: " + ", ".join(str(v) for v in kind.values)
    if unknown and isinstance(kind, msgspec.inspect.StructType):
        return did_you_mean(unknown.group(1), [f.encode_name for f in kind.fields])
    return ""


def _type_at(key: str) -> Any:
    """The schema's type at a key of a mapping file ($.objects.contacts.list)."""
    kind: Any = msgspec.inspect.type_info(MappingFile)
    for part in re.findall(r"\.([^.\[]+)|\[\d+\]", key):
        while isinstance(kind, msgspec.inspect.UnionType):  # an operation or a list of them: the operation's
            kind = next((t for t in kind.types if isinstance(t, msgspec.inspect.StructType)), kind.types[0])
        if isinstance(kind, msgspec.inspect.StructType):
            kind = next((f.type for f in kind.fields if f.encode_name == part), None)
        elif isinstance(kind, (msgspec.inspect.DictType, msgspec.inspect.ListType)):
            kind = getattr(kind, "value_type", None) or getattr(kind, "item_type", None)
        if kind is None:
            return None
    while isinstance(kind, msgspec.inspect.UnionType):
        kind = next((t for t in kind.types if isinstance(t, (msgspec.inspect.StructType, msgspec.inspect.LiteralType))), None)
    return kind


def _failing_entry(raw: Any, entries: Any, message: str) -> Any:
    """The entry of `entries` (a dict inside `raw`) that fails with `message`:
    converting the file with each entry alone tells them apart."""
    if not isinstance(entries, dict):
        return None
    saved = dict(entries)
    try:
        for name, value in saved.items():
            entries.clear()
            entries[name] = value
            try:
                msgspec.convert(raw, MappingFile)
            except msgspec.ValidationError as exc:
                if str(exc) == message:
                    return name
        return None
    finally:
        entries.clear()
        entries.update(saved)


def _expand(template: Any, fragments: dict[str, Any], key: str, used: set[str], within: tuple = ()) -> Any:
    """A template with each `$name` leaf replaced by the fragment of that name."""
    if isinstance(template, str) and template.startswith("$"):
        name = template[1:]
        if name not in fragments:
            known = f"{did_you_mean(name, fragments)}" if fragments else "; the file declares no `fragments`"
            raise ExpressionError(key, f"unknown fragment {name!r}{known}")
        if name in within:
            raise ExpressionError(f"$.fragments.{within[0]}", f"the fragments {' -> '.join(within + (name,))} use each other")
        used.add(name)
        return _expand(fragments[name], fragments, key, used, within + (name,))
    if isinstance(template, dict):
        return {k: _expand(v, fragments, f"{key}.{k}", used, within) for k, v in template.items()}
    if isinstance(template, list):
        return [_expand(v, fragments, f"{key}[{i}]", used, within) for i, v in enumerate(template)]
    return template


def _expand_fragments(spec: MappingFile) -> list[str]:
    """Fragments replaced in every template of the file; the unused ones, as warnings."""
    used: set[str] = set()
    for name, fragment in spec.fragments.items():
        compile_template(_expand(fragment, spec.fragments, f"$.fragments.{name}", set(), (name,)), f"$.fragments.{name}")
    for name, obj in spec.objects.items():
        key = f"$.objects.{name}"
        obj.unify = _expand(obj.unify, spec.fragments, f"{key}.unify", used)
        for verb in ("create", "list", "retrieve"):
            alternatives = getattr(obj, verb)
            many = isinstance(alternatives, list)
            for i, alt in enumerate(alternatives if many else [alternatives] if alternatives else []):
                where = f"{key}.{verb}" + (f"[{i}]" if many else "")
                for part in ("query", "headers", "body", "unify"):
                    setattr(alt, part, _expand(getattr(alt, part), spec.fragments, f"{where}.{part}", used))
    return [f"$.fragments.{name}: no template uses this fragment" for name in spec.fragments if name not in used]


def _compile(spec: MappingFile, path: Path) -> Provider:
    if not spec.base_url.startswith(("http://", "https://")):
        raise ExpressionError("$.base_url", "must be an http:// or https:// URL")
    unused_fragments = _expand_fragments(spec)
    for i, name in enumerate(spec.passthrough):
        if name not in spec.values:
            raise ExpressionError(f"$.passthrough[{i}]", f"no value map named {name!r}{did_you_mean(name, spec.values)}")
    objects = {}
    for name, obj in spec.objects.items():
        key = f"$.objects.{name}"
        unified = OBJECTS.get(name)
        if unified is None:
            raise ExpressionError(key, f"unknown unified object{did_you_mean(name, OBJECTS)}")
        if obj.create is not None and unified.input is None:
            raise ExpressionError(f"{key}.create", f"the unified API has no create for {name}")
        operations = {}
        for verb in ("create", "list", "retrieve"):
            alternatives = getattr(obj, verb)
            if alternatives is None:
                continue
            if not isinstance(alternatives, list):
                alternatives = [alternatives]
            for i, alt in enumerate(alternatives):
                unknown = [f for f in alt.echo if verb != "create" or f not in unified.input.__struct_fields__]
                if unknown:
                    raise ExpressionError(f"{key}.{verb}.echo", f"echo takes fields of the unified {name} input, on create only: {', '.join(unknown)}")
            compiled = []
            for i, alt in enumerate(alternatives):
                where = f"{key}.{verb}" + (f"[{i}]" if len(alternatives) > 1 else "")
                unifier = Unifier({**obj.unify, **alt.unify}, unified.output, f"{where}.unify" if alt.unify else f"{key}.unify",
                                  spec.values, spec.context, pages=verb == "list")
                op = Operation(alt, verb, where, unifier)
                for check in op.checks:
                    for parts in (check.parts, *check.alternatives):
                        _check_path(parts, unified.input if verb == "create" else None, spec.context, check.key)
                compiled.append(op)
            operations[verb] = tuple(compiled)
        objects[name] = ProviderObject(operations)
    headers = {k: compile_expression(v, f"$.headers.{k}") for k, v in spec.headers.items()}
    warnings = _check(spec, headers, objects) + unused_fragments
    return Provider(
        name=spec.provider,
        base_url=spec.base_url.rstrip("/"),
        auth=spec.auth,
        context=spec.context,
        headers=headers,
        error_message=compile_expression(spec.errors.message, "$.errors.message"),
        error_code=compile_expression(spec.errors.code, "$.errors.code") if spec.errors.code else None,
        error_status=spec.errors.status,
        values=spec.values,
        passthrough=frozenset(spec.passthrough),
        objects=objects,
        limits=spec.limits,
        retries=spec.retries,
        breaker=spec.breaker,
        source=path,
        warnings=warnings,
    )


def _check_path(parts: tuple[str, ...], model: type[Model] | None, context: dict, key: str) -> None:
    """A check's path names a field of the unified input, or a declared context key."""
    if parts[0] == "context":
        if len(parts) < 2 or parts[1] not in context:
            name = parts[1] if len(parts) > 1 else ""
            raise ExpressionError(key, f"context.{name} is not a key the mapping's `context` declares"
                                       f"{did_you_mean(name, context)}")
        return
    if parts[0] != "body":
        return
    if model is None:
        raise ExpressionError(key, "only a create has a body to check")
    for i, name in enumerate(parts[1:], 1):
        if name == "[]":
            continue
        if name not in model.__struct_fields__:
            raise ExpressionError(key, f"{'.'.join(parts[:i + 1])}: not a field of the unified {model.__name__}"
                                       f"{did_you_mean(name, model.__struct_fields__)}")
        model = nested_models(model).get(name)
        if model is None:
            return  # a scalar, or free-form (field_mappings): nothing further to know


# What a request-side expression reads: the request document's members, and a page's.
DOCUMENT = ("body", "id", "query", "page", "context")
PAGE = ("limit", "offset", "start", "number", "token")
_FUNCTIONS = Functions.FUNCTION_TABLE



def _check(spec: MappingFile, headers: dict[str, Any], objects: dict[str, "ProviderObject"]) -> list[str]:
    """What compiling each expression alone cannot see: a function or value map
    that does not exist, a read of the request document it does not hold, a
    context key the mapping does not declare. Mistakes that are errors raise;
    the rest come back as warnings."""
    request_side = [(f"$.headers.{k}", e, ("context",)) for k, e in headers.items()]
    other = []
    unify = [leaf for name, obj in spec.objects.items() for leaf in leaves(obj.unify, f"$.objects.{name}.unify")]
    for obj in objects.values():
        for ops in obj.operations.values():
            for op in ops:
                unify += leaves(op.spec.unify, f"{op.key}.unify")
                if op.when is not None:
                    request_side.append((f"{op.key}.when", op.when, DOCUMENT))
                for part in ("query", "headers", "body"):
                    for key, expression in leaves(getattr(op.spec, part), f"{op.key}.{part}"):
                        if any(name == "to_number" for name, _ in calls(expression)):
                            raise ExpressionError(key, "to_number() gives null for what it cannot read, and the "
                                                       "provider would never see the field: use number() or "
                                                       "integer(), which refuse it with a 422 naming the field")
                        request_side.append((key, expression, DOCUMENT))
                request_side += [(c.key, c.required, DOCUMENT) for c in op.checks if not isinstance(c.required, bool)]
                for e in op.path:
                    if not isinstance(e, str):
                        if not reads(e) - {()}:
                            raise ExpressionError(f"{op.key}.path", f"the placeholder {{{e.expression}}} reads nothing "
                                                                    "from the request: name a member, e.g. {id}")
                        request_side.append((f"{op.key}.path", e, DOCUMENT))
                other += [(op.key, e) for e in (op.record, op.records, op.total, op.next, op.count, op.more) if e is not None]
    for key, expression in unify:
        other.append((key, expression))
        for path in reads(expression):
            if path[:1] == ("context",):
                raise ExpressionError(key, f"reads context.{'.'.join(path[1:])}, but unify reads a provider record: "
                                           f"use context('{path[1] if len(path) > 1 else 'key'}')")
            # `id` is a record's own field in every provider; a member of these never is.
            if path[0:1] in (("body",), ("query",), ("page",)) and len(path) > 1:
                raise ExpressionError(key, f"reads {'.'.join(path)}, a member of the request document, but unify "
                                           "reads a provider record: the record's own fields, e.g. id, name")
    for key, expression, roots in request_side:
        for path in reads(expression):
            if path and path[0] not in roots:
                raise ExpressionError(key, f"reads {path[0]!r}, which the request document does not hold: "
                                           f"it holds {', '.join(roots)}{did_you_mean(path[0], roots)}")
            if path[:1] == ("page",) and len(path) > 1 and path[1] not in PAGE:
                raise ExpressionError(key, f"reads page.{path[1]}, which a page does not hold{did_you_mean(path[1], PAGE)}")
    used_maps: set[str] = set()
    for key, expression, *_ in request_side + other:
        for name, args in calls(expression):
            function = _FUNCTIONS.get(name)
            if function is None:
                raise ExpressionError(key, f"unknown function {name}(){did_you_mean(name, _FUNCTIONS)}")
            wanted = function["signature"]
            variadic = bool(wanted) and wanted[-1].get("variadic", False)
            if len(args) < len(wanted) - variadic or (not variadic and len(args) > len(wanted)):
                raise ExpressionError(key, f"{name}() takes {len(wanted)}{' or more' if variadic else ''} "
                                           f"argument(s), not {len(args)}")
            if name in ("to_remote", "to_unified") and args[1]["type"] == "literal" and isinstance(args[1]["value"], str):
                table = args[1]["value"]
                if table not in spec.values:
                    raise ExpressionError(key, f"{name}() names the value map {table!r}, which `values` does not "
                                               f"hold{did_you_mean(table, spec.values)}")
                used_maps.add(table)
            if name in ("to_iso", "from_iso") and args[1]["type"] == "literal" and args[1]["value"] not in DATE_FORMATS:
                raise ExpressionError(key, f"{name}() names the date format {args[1]['value']!r}, which is none"
                                           f"{did_you_mean(str(args[1]['value']), DATE_FORMATS, 'formats')}")
        for name in sorted(context_reads(expression) - spec.context.keys()):
            declared = ", ".join(sorted(spec.context)) or "none"
            raise ExpressionError(key, f"reads context key {name!r}, which the mapping's `context` does not declare "
                                       f"(declared: {declared})")
    return [f"$.values.{name}: no expression uses this value map" for name in sorted(spec.values.keys() - used_maps)]


def load_dirs(directories: list[Path]) -> dict[str, Provider]:
    """The first directory's mappings (the bundled ones), then each other's: a
    provider mapped again there replaces the first's, once."""
    providers = load_dir(directories[0])
    added: dict[str, Path] = {}
    for directory in directories[1:]:
        for name, provider in load_dir(directory).items():
            if name in added:
                raise MappingError(provider.source, "$.provider", f"{name!r} is also mapped by {added[name]}")
            added[name] = provider.source
            providers[name] = provider
    return providers


def load_dir(directory: Path) -> dict[str, Provider]:
    if not directory.is_dir():
        raise MappingError(directory, "$", "no such directory of mapping files")
    providers: dict[str, Provider] = {}
    for path in sorted(directory.glob("*.yaml")):
        provider = load(path)
        if provider.name in providers:
            raise MappingError(path, "$.provider", f"{provider.name!r} is also mapped by {providers[provider.name].source}")
        providers[provider.name] = provider
    return providers
