"""A Panora SDK client, run by tests/test_sdk.py with the SDK's own virtualenv.

It is written as a Panora user writes one; only `server_url` points it at the
gateway. It reads a JSON job from stdin and prints a JSON report on stdout.
Not a test module: it imports nothing from the project (it cannot: the SDK
needs httpx<0.28 and pydantic<2.9, the gateway does not).

Paging passes `cursor=` explicitly. The SDK's own pager (`.next()`) is used
once, on the last page, only to record what it does there.
"""

import json
import sys
from typing import Any

from panora_sdk import Panora, models


def dump(result: Any) -> Any:
    return None if result is None else result.model_dump(mode="json")


def sdk_error(call) -> dict:
    try:
        result = call()
    except models.SDKError as exc:
        return {"raised": type(exc).__name__, "status_code": exc.status_code, "body": exc.body,
                "content_type": exc.raw_response.headers.get("content-type") if exc.raw_response is not None else None,
                "text": str(exc)}
    return {"raised": None, "result": dump(result)}


def main() -> None:
    job = json.load(sys.stdin)
    token = job["token"]
    panora = Panora(api_key=job["api_key"], server_url=job["server_url"])
    contacts = panora.accounting.contacts
    report: dict[str, Any] = {}

    report["created"] = [dump(contacts.create(x_connection_token=token, unified_accounting_contact_input=contact,
                                              remote_data=False))
                         for contact in job["contacts"]]

    pages = []
    cursor = None
    last = None
    for _ in range(job.get("max_pages", 100)):
        last = contacts.list(x_connection_token=token, limit=job["limit"], cursor=cursor)
        pages.append(dump(last.result))
        cursor = last.result.next_cursor
        if cursor is None:
            break
    report["pages"] = pages

    # What the SDK's pager does past the last page (its next_cursor is null).
    after = last.next() if last is not None else None
    report["pager_after_last_page"] = None if after is None else dump(after.result)

    report["retrieved"] = [dump(contacts.retrieve(x_connection_token=token, id=c["id"])) for c in report["created"]]
    first = report["created"][0]["id"]
    report["retrieved_remote_data"] = dump(contacts.retrieve(x_connection_token=token, id=first, remote_data=True))

    report["errors"] = {
        "unknown_id": sdk_error(lambda: contacts.retrieve(x_connection_token=token, id="64b8f1a2e4b0c8d9f0ffffff")),
        "unknown_token": sdk_error(lambda: contacts.list(x_connection_token="no-such-token")),
        "bad_key": sdk_error(lambda: Panora(api_key="wrong-key", server_url=job["server_url"])
                             .accounting.contacts.list(x_connection_token=token)),
        "unmapped": sdk_error(lambda: panora.accounting.invoices.list(x_connection_token=token)),
        "unmapped_create": sdk_error(lambda: panora.accounting.accounts.create(
            x_connection_token=token, unified_accounting_account_input={"name": "Cash"})),
    }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
