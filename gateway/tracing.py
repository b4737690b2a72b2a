"""Optional OpenTelemetry traces: a span per call to the unified API and one per
call to a provider, the caller's W3C `traceparent` taken and passed on.

On only when the OpenTelemetry SDK is installed (`pip install
opentelemetry-sdk`, plus an exporter such as `opentelemetry-exporter-otlp`)
and its standard environment names an exporter: `OTEL_TRACES_EXPORTER`
(`otlp`, `console`, ...) or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` apply as the
SDK reads them. Otherwise nothing of OpenTelemetry is imported and the
request path is what it is without it: the spans come from wrappers put
around the gateway and its upstream exchange at start, never from a test on
every call.

Span names and attributes hold templates, methods, statuses and provider
names: never an id, a query string, a header's value or a body.
"""

import os
from importlib.metadata import entry_points
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit

from .call import Call
from .settings import ConfigError


def _exporter_names() -> list[str]:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names and (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = "otlp"
    if names.lower() == "none":
        return []
    return [name.strip() for name in names.split(",") if name.strip()]


def start() -> "Tracing | None":
    """Tracing as the environment configures it; None when it does not (or the SDK is not installed)."""
    names = _exporter_names()
    if not names or find_spec("opentelemetry.sdk") is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "gateway"}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} is installed "
                              f"(for otlp: pip install opentelemetry-exporter-otlp)")
        provider.add_span_processor(BatchSpanProcessor(next(iter(found)).load()()))
    return Tracing(provider)


class Tracing:
    def __init__(self, provider: Any):
        from opentelemetry import propagate, trace

        self.provider = provider
        self.tracer = provider.get_tracer("gateway")
        self.propagate = propagate
        self.trace = trace

    def server(self, app: Any) -> Any:
        """The unified API's ASGI app, each call in a span continuing the caller's trace."""
        tracer, propagate, trace = self.tracer, self.propagate, self.trace

        async def traced(scope: dict, receive: Any, send: Any) -> None:
            carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                       if name in (b"traceparent", b"tracestate")}
            template = Call(scope, receive).template()
            status = 0

            async def sending(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            with tracer.start_as_current_span(f"{scope['method']} {template}", context=propagate.extract(carrier),
                                              kind=trace.SpanKind.SERVER,
                                              attributes={"http.request.method": scope["method"],
                                                          "http.route": template}) as span:
                await app(scope, receive, sending)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)

        return traced

    def client(self, exchange: Any) -> "_ClientSpans":
        return _ClientSpans(exchange, self)

    def shutdown(self) -> None:
        self.provider.shutdown()  # sends the spans still held


class _ClientSpans:
    """The upstream exchange, each call to a provider in a span whose context goes with it as `traceparent`."""

    def __init__(self, exchange: Any, tracing: Tracing):
        self.exchange = exchange
        self.tracing = tracing

    async def __call__(self, provider: Any, method: str, url: str, query: list, headers: dict,
                       body: bytes | None) -> Any:
        trace = self.tracing.trace
        with self.tracing.tracer.start_as_current_span(
                f"{method} {provider.name}", kind=trace.SpanKind.CLIENT,
                attributes={"http.request.method": method, "server.address": urlsplit(url).hostname or "",
                            "gateway.provider": provider.name}) as span:
            headers = dict(headers)
            self.tracing.propagate.inject(headers)
            answer = await self.exchange(provider, method, url, query, headers, body)
            span.set_attribute("http.response.status_code", answer.status)
            if answer.status >= 500:
                span.set_status(trace.StatusCode.ERROR)
            return answer

    async def aclose(self) -> None:
        await self.exchange.aclose()
