"""A Panora SDK client for contacts only, run by tests/test_quickbooks.py with the SDK's own virtualenv.

A variant of tests/sdk_client.py for a provider that maps more than contacts:
it creates the job's contacts, pages through every contact with `cursor=`,
retrieves each created one and an id of no known kind. It reads a JSON job
from stdin and prints a JSON report on stdout; it imports nothing from the project.
"""

import json
import sys
from typing import Any

from panora_sdk import Panora, models


def dump(result: Any) -> Any:
    return None if result is None else result.model_dump(mode="json")


def main() -> None:
    job = json.load(sys.stdin)
    token = job["token"]
    contacts = Panora(api_key=job["api_key"], server_url=job["server_url"]).accounting.contacts
    report: dict[str, Any] = {}

    report["created"] = [dump(contacts.create(x_connection_token=token, unified_accounting_contact_input=contact))
                         for contact in job["contacts"]]

    pages, cursor = [], None
    for _ in range(job.get("max_pages", 200)):
        page = contacts.list(x_connection_token=token, limit=job["limit"], cursor=cursor)
        pages.append(dump(page.result))
        cursor = page.result.next_cursor
        if cursor is None:
            break
    report["pages"] = pages

    report["retrieved"] = [dump(contacts.retrieve(x_connection_token=token, id=c["id"])) for c in report["created"]]
    try:
        contacts.retrieve(x_connection_token=token, id=job["unknown_id"])
        report["unknown"] = None
    except models.SDKError as exc:
        report["unknown"] = {"status_code": exc.status_code, "body": exc.body}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
