"""The one error shape, and a provider's failure put in the gateway's terms (gateway/errors.py), in process."""

import json

import pytest

from gateway.errors import (
    GatewayError,
    bad_gateway,
    bad_request,
    from_provider,
    internal_error,
    not_implemented,
    shutting_down,
    unauthorized,
    unprocessable,
)


def shape(error: GatewayError) -> dict:
    response = error.response()
    assert response.status_code == error.status and response.media_type == "application/json"
    return json.loads(response.body)


def test_the_error_shape_is_panoras_with_a_stable_code_and_no_nulls():
    body = shape(GatewayError(422, "invalid_body", "bad", path="$.x", provider=None))
    assert body == {"statusCode": 422, "error": "Unprocessable Entity", "code": "invalid_body", "message": "bad",
                    "path": "$.x"}
    assert GatewayError(405, "m", "n", {"Allow": "GET"}).response().headers["allow"] == "GET"


@pytest.mark.parametrize("error, status, code", [
    (bad_request("c", "m"), 400, "c"), (unprocessable("c", "m"), 422, "c"), (unauthorized("c", "m"), 401, "c"),
    (bad_gateway("c", "m"), 502, "c"), (internal_error(), 500, "internal_error"), (shutting_down(), 503, "shutting_down"),
    (not_implemented("xero", "list items"), 501, "operation_not_mapped"),
])
def test_the_helpers_answer_their_status(error, status, code):
    assert (error.status, error.code) == (status, code)
    assert shape(error)["statusCode"] == status


def test_an_unmapped_operation_names_provider_and_operation():
    body = shape(not_implemented("xero", "list items"))
    assert body["provider"] == "xero" and body["operation"] == "list items" and "'xero'" in body["message"]


def test_an_internal_error_says_nothing_of_its_cause():
    assert shape(internal_error())["message"] == "the gateway failed unexpectedly; the error is logged"


@pytest.mark.parametrize("status, mapped, ours, code", [
    (400, None, 400, "upstream_rejected"),
    (404, None, 404, "not_found"),
    (410, None, 404, "not_found"),
    (409, None, 409, "upstream_rejected"),
    (422, None, 422, "upstream_rejected"),
    (418, None, 400, "upstream_rejected"),   # another client error: the caller's request, as a 400
    (499, None, 400, "upstream_rejected"),
    (401, None, 502, "upstream_auth_failed"),  # the connection's credentials, not the caller's
    (403, None, 502, "upstream_auth_failed"),
    (407, None, 502, "upstream_auth_failed"),
    (500, None, 502, "upstream_error"),
    (503, None, 502, "upstream_error"),
    (302, None, 502, "upstream_error"),
    (400, 422, 422, "upstream_rejected"),      # the mapping's errors.status wins
    (500, 409, 409, "upstream_rejected"),
    (400, 404, 404, "not_found"),
    (400, 503, 502, "upstream_error"),
])
def test_a_provider_status_becomes_ours(status, mapped, ours, code):
    error = from_provider("acme", status, "went wrong", "E1", mapped, None)
    assert (error.status, error.code) == (ours, code)
    body = shape(error)
    assert body["provider"] == "acme" and body["provider_status"] == status
    assert body["provider_code"] == "E1" and body["provider_message"] == "went wrong"
    assert body["message"].startswith("acme ") and body["message"].endswith(": went wrong")
    assert not error.maybe_done


def test_a_provider_without_a_message_says_so_without_a_dangling_colon():
    body = shape(from_provider("acme", 404, None, None, None, None))
    assert body["message"] == "acme has no such record" and "provider_message" not in body and "provider_code" not in body
    assert shape(from_provider("acme", 500, "", None, None, None))["message"] == "acme failed with HTTP 500"


@pytest.mark.parametrize("retry_after, header", [("7", "7"), ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
                                                 (None, None), ("", None), ("é", None), ("1\n2", None)])
def test_a_rate_limit_passes_a_usable_retry_after_on(retry_after, header):
    error = from_provider("acme", 429, "slow down", None, None, retry_after)
    assert (error.status, error.code) == (429, "upstream_rate_limited")
    assert error.headers.get("Retry-After") == header
    assert "rate limiting" in error.message and error.message.endswith(": slow down")
    assert from_provider("acme", 400, None, None, 429, "3").status == 429
