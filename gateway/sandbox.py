"""An in-memory fake of Formation's contacts API, kept to its documented contract.

It backs the embedded default (so the quickstart needs no network) and the
tests. It checks the API key and required fields, pages with skip/limit and
answers in Formation's envelopes. Any company id names a company (a demo
knows no customers): contacts are kept and listed per company, and COMPANY_ID
is the one the embedded default's connection names.
"""

import itertools
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API_KEY = "sandbox-formation-key"
COMPANY_ID = "6650f1a2e4b0c8d9f0aa0001"
_TYPES = ("customer", "vendor")
_BILLING = ("email", "phone", "phone_code", "iso_code", "country", "address_1", "address_2",
            "postal_code", "district", "state", "province", "tax_id")
_STRINGS = ("status", "description")


def _fail(status: int, code: str, details: str, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message, "data": None,
                         "error": {"code": code, "details": details}}, status)


def _ok(data: Any, message: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, "message": message, "data": data}, status)


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    missing = [f for f in ("type", "full_name", "email", "company_id") if not body.get(f)]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required"
    if body["type"] not in _TYPES:
        return "type must be one of customer, vendor"
    for name in ("full_name", "email", "company_id", *_STRINGS):
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string"
    for name in ("cc_emails", "bcc_emails"):
        if name in body and not (isinstance(body[name], list) and all(isinstance(e, str) for e in body[name])):
            return f"{name} must be an array of strings"
    billing = body.get("billing", {})
    if not isinstance(billing, dict):
        return "billing must be an object"
    for name, value in billing.items():
        if name not in _BILLING:
            return f"billing.{name} is not a billing field"
        if not isinstance(value, str):
            return f"billing.{name} must be a string"
    return None


def create_app(api_key: str = API_KEY) -> Starlette:
    contacts: dict[str, dict] = {}  # insertion order is the list order
    ids = (f"{n:024x}" for n in itertools.count(0x64B8F1A2E4B0C8D9F0000001))

    def authorized(request: Request) -> JSONResponse | None:
        key = request.headers.get("x-api-key")
        if not key:
            return _fail(401, "API_KEY_REQUIRED", "the X-API-KEY header is required", "Unauthorized")
        if key != api_key:
            return _fail(401, "INVALID_API_KEY", "the API key is not valid", "Unauthorized")
        return None

    async def create(request: Request) -> JSONResponse:
        if denied := authorized(request):
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _fail(400, "INVALID_REQUEST", "the body is not valid JSON", "Invalid request")
        if problem := _validate(body):
            return _fail(400, "VALIDATION_FAILED", problem, "Invalid request")
        now = int(time.time())
        contact = {
            "id": next(ids), "created_at": now, "updated_at": now,
            "type": body["type"], "status": body.get("status", "active"),
            "full_name": body["full_name"], "email": body["email"],
            "description": body.get("description", ""),
            "cc_emails": body.get("cc_emails", []), "bcc_emails": body.get("bcc_emails", []),
            "billing": body.get("billing", {}),
            "company_id": body["company_id"],
        }
        contacts[contact["id"]] = contact
        return _ok(_public(contact), "Contact created successfully", 201)

    async def list_contacts(request: Request) -> JSONResponse:
        if denied := authorized(request):
            return denied
        company = request.query_params.get("company_id")
        if not company:
            return _fail(400, "INVALID_REQUEST", "company_id is required", "Invalid request")
        try:
            skip = int(request.query_params.get("skip", "0"))
            limit = int(request.query_params.get("limit", "10"))
        except ValueError:
            return _fail(400, "INVALID_REQUEST", "skip and limit must be integers", "Invalid request")
        if skip < 0 or not 1 <= limit <= 100:
            return _fail(400, "INVALID_REQUEST", "skip must be >= 0 and limit 1 to 100", "Invalid request")
        mine = [c for c in contacts.values() if c["company_id"] == company]
        page = [_public(c) for c in mine[skip:skip + limit]]
        return _ok({"contacts": page, "total": len(mine)}, "Contacts retrieved successfully")

    async def retrieve(request: Request) -> JSONResponse:
        if denied := authorized(request):
            return denied
        contact = contacts.get(request.path_params["contact_id"])
        if contact is None:
            return _fail(404, "CONTACT_NOT_FOUND", "contact not found", "Contact not found")
        return _ok(_public(contact), "Contact retrieved successfully")

    return Starlette(routes=[
        Route("/contacts", create, methods=["POST"]),
        Route("/contacts", list_contacts, methods=["GET"]),
        Route("/contacts/{contact_id}", retrieve, methods=["GET"]),
    ])


def _public(contact: dict) -> dict:
    # Formation's documented record does not echo company_id.
    return {k: v for k, v in contact.items() if k != "company_id"}
