"""A fake QuickBooks Online accounting API (v3), for tests.

Built from Intuit's published reference (entity pages, the data-query page and
the common-errors page): the same paths, envelopes and faults, and the same
checks on what it receives. It answers only over real HTTP, on loopback:

- `Authorization: Bearer <token>` is required; a wrong or missing token is a 401
  with QuickBooks' lower-case `fault` body, a realm other than the company's a 403.
- Every call must carry `minorversion` (stricter than QuickBooks, which falls
  back to a default: here it proves the mapping sends it).
- GET /v3/company/{realm}/query?query=... parses the query language: `select *`
  or `count(*)` from one entity (case-sensitive), `where` conditions joined by
  `and` (`Field = 'x'`, `Active = true`, `Active IN (true, false)`),
  `STARTPOSITION` (1-based) and `MAXRESULTS` (at most 1000). Name lists return
  active records only unless the query asks for `Active`. Answers
  {"QueryResponse": {"<Entity>": [...], "startPosition", "maxResults"}, "time"},
  leaving the array (and the counters) out when nothing matched.
- GET /v3/company/{realm}/{entity}/{id} -> {"<Entity>": {...}, "time"}; an
  unknown id is QuickBooks' HTTP 400 fault 610 Object Not Found.
- POST /v3/company/{realm}/{entity} creates, with the entity's business rules:
  required fields (fault 2020), known fields only (2010), enumerations (2170),
  references to records that exist (2500), unique display and account names
  across customers and vendors (6240), unique document numbers (6140), balanced
  journal entries (6000). The created record comes back as QuickBooks fills it
  in (Id, SyncToken, MetaData, totals, masked tax ids, a subtotal line).
- An entity it does not know is QuickBooks' fault 500 Unsupported Operation.

State is in memory: customers and vendors number their Ids separately, so
their Ids overlap as they do in QuickBooks.
"""

import copy
import itertools
import json
import re
import threading
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

REALM = "9341452"
TOKEN = "qbo-test-access-token"
MAX_RESULTS = 1000
PACIFIC = timezone(timedelta(hours=-7))

# Path segment -> entity name, for every entity this fake serves.
ENTITIES = {name.lower(): name for name in (
    "Customer", "Vendor", "Account", "Invoice", "Bill", "Payment", "JournalEntry", "PurchaseOrder", "Purchase", "Item",
    "TaxRate", "Class", "Department", "CompanyInfo", "CreditMemo", "VendorCredit", "Attachable")}
NAME_LISTS = {"Customer", "Vendor", "Account", "Item", "Class", "Department"}

# Classification of each AccountType (Intuit's AccountTypeEnum).
ACCOUNT_TYPES = {
    "Bank": "Asset", "Other Current Asset": "Asset", "Fixed Asset": "Asset", "Other Asset": "Asset",
    "Accounts Receivable": "Asset", "Equity": "Equity", "Expense": "Expense", "Other Expense": "Expense",
    "Cost of Goods Sold": "Expense", "Accounts Payable": "Liability", "Credit Card": "Liability",
    "Long Term Liability": "Liability", "Other Current Liability": "Liability", "Income": "Revenue",
    "Other Income": "Revenue",
}
CURRENCIES = {"USD": "United States Dollar", "CAD": "Canadian Dollar", "EUR": "Euro", "GBP": "British Pound Sterling"}

_COMMON = {"Id", "SyncToken", "sparse", "domain", "MetaData"}
_PERSON = {"DisplayName", "Title", "GivenName", "MiddleName", "FamilyName", "Suffix", "CompanyName", "PrintOnCheckName",
           "PrimaryEmailAddr", "PrimaryPhone", "AlternatePhone", "Mobile", "Fax", "WebAddr", "BillAddr", "ShipAddr",
           "OtherAddr", "Notes", "Active", "CurrencyRef", "Balance", "OpenBalanceDate"}
_TXN = {"DocNumber", "TxnDate", "PrivateNote", "Line", "CurrencyRef", "ExchangeRate", "ClassRef", "DepartmentRef",
        "TxnTaxDetail", "LinkedTxn", "CustomField", "GlobalTaxCalculation", "TotalAmt"}
FIELDS = {
    "Customer": _COMMON | _PERSON | {"PrimaryTaxIdentifier", "SecondaryTaxIdentifier", "ResaleNum", "Taxable", "Job",
                                     "ParentRef", "BillWithParent", "PreferredDeliveryMethod", "SalesTermRef",
                                     "PaymentMethodRef", "DefaultTaxCodeRef"},
    "Vendor": _COMMON | _PERSON | {"TaxIdentifier", "AcctNum", "Vendor1099", "TermRef", "BillRate", "CreditLimit"},
    "Account": _COMMON | {"Name", "AcctNum", "AccountType", "AccountSubType", "Description", "Active", "ParentRef",
                          "SubAccount", "CurrencyRef", "TaxCodeRef", "Classification"},
    "Invoice": _COMMON | _TXN | {"CustomerRef", "CustomerMemo", "BillAddr", "ShipAddr", "SalesTermRef", "DueDate",
                                 "BillEmail", "EmailStatus", "PrintStatus", "AllowOnlinePayment", "Deposit",
                                 "DepositToAccountRef", "ApplyTaxAfterDiscount", "ShipDate", "TrackingNum"},
    # A Bill takes a class on its lines only.
    "Bill": (_COMMON | _TXN | {"VendorRef", "APAccountRef", "SalesTermRef", "DueDate", "Balance"}) - {"ClassRef"},
    "Payment": _COMMON | {"TxnDate", "PrivateNote", "Line", "CustomerRef", "DepositToAccountRef", "PaymentMethodRef",
                          "PaymentRefNum", "TotalAmt", "CurrencyRef", "ExchangeRate", "ProcessPayment", "ARAccountRef"},
    "JournalEntry": _COMMON | _TXN | {"Adjustment"},
    "PurchaseOrder": _COMMON | _TXN | {"VendorRef", "APAccountRef", "ShipTo", "ShipAddr", "VendorAddr", "DueDate",
                                       "POStatus", "Memo", "POEmail", "ShipMethodRef"},
    "Purchase": _COMMON | _TXN | {"PaymentType", "AccountRef", "EntityRef", "Credit", "RemitToAddr", "PaymentMethodRef",
                                  "PrintStatus"},
}
LINE_TYPES = {
    "Invoice": {"SalesItemLineDetail", "DescriptionOnly", "DiscountLineDetail", "SubTotalLineDetail", "GroupLineDetail"},
    "JournalEntry": {"JournalEntryLineDetail"},
    "PurchaseOrder": {"ItemBasedExpenseLineDetail", "AccountBasedExpenseLineDetail"},
    "Bill": {"ItemBasedExpenseLineDetail", "AccountBasedExpenseLineDetail"},
    "Purchase": {"ItemBasedExpenseLineDetail", "AccountBasedExpenseLineDetail"},
}


class Fault(Exception):
    """A QuickBooks fault: {"Fault": {"Error": [...], "type"}, "time"}, HTTP 400 unless said."""

    def __init__(self, code: str, message: str, detail: str, status: int = 400, kind: str = "ValidationFault",
                 element: str = ""):
        super().__init__(f"{code} {message}: {detail}")
        self.code, self.message, self.detail, self.status, self.kind, self.element = code, message, detail, status, kind, element

    def response(self) -> JSONResponse:
        return JSONResponse({"Fault": {"Error": [{"Message": self.message, "Detail": self.detail, "code": self.code,
                                                  "element": self.element}], "type": self.kind},
                             "time": _now()}, self.status)


def _now() -> str:
    return datetime.now(PACIFIC).isoformat(timespec="milliseconds")


def _stamp() -> str:
    return datetime.now(PACIFIC).isoformat(timespec="seconds")


def _lowercase_fault(status: int, message: str, detail: str | None, code: str, kind: str) -> JSONResponse:
    """How QuickBooks answers authentication and authorization failures."""
    return JSONResponse({"warnings": None, "intuitObject": None,
                         "fault": {"error": [{"message": message, "detail": detail, "code": code, "element": None}],
                                   "type": kind},
                         "report": None, "queryResponse": None, "batchItemResponse": [], "attachableResponse": [],
                         "syncErrorResponse": None, "requestId": None, "time": int(time.time() * 1000), "status": None,
                         "cdcresponse": []}, status)


def _required(what: str) -> Fault:
    return Fault("2020", "Required param missing, need to supply the required value for the API",
                 f"Required parameter {what} is missing in the request", element=what)


def _invalid_reference(what: str, value: Any) -> Fault:
    return Fault("2500", "Invalid Reference Id", f"Invalid Reference Id : {what} {value!r} does not exist", element=what)


def _enumeration(what: str, value: Any) -> Fault:
    return Fault("2170", "Invalid Enumeration", f"Invalid Enumeration : {value}", element=what)


def _business(detail: str) -> Fault:
    return Fault("6000", "A business validation error has occurred while processing your request",
                 f"Business Validation Error: {detail}")


def _mask(value: str) -> str:
    """Tax ids come back masked, only their last five digits shown: 123-45-6789 -> XXXXXX56789."""
    digits = "".join(c for c in value if c.isdigit())[-5:]
    return "X" * max(0, len(value) - len(digits)) + digits


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Fault("2010", "Request has invalid or unsupported property",
                    f"Property Name:{what} specified is unsupported or invalid: {value!r} is not a number", element=what)
    return value


def _date(value: Any, what: str) -> str:
    """QuickBooks dates are yyyy-MM-dd."""
    try:
        if isinstance(value, str) and len(value) == 10:
            return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise Fault("2010", "Request has invalid or unsupported property",
                f"Property Name:{what} specified is unsupported or invalid: {value!r} is not a date (yyyy-MM-dd)", element=what)


def _ref_value(record: dict, field: str) -> str | None:
    ref = record.get(field)
    if ref is None:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("value"), str) or not ref["value"]:
        raise Fault("2010", "Request has invalid or unsupported property",
                    f"Property Name:{field} specified is unsupported or invalid: a reference needs a value", element=field)
    return ref["value"]


def _money(amount: float) -> float:
    return round(float(amount), 2)


# -- seed records, paraphrased from the examples in Intuit's reference ---------------------------

def _meta(created: str, updated: str | None = None) -> dict:
    return {"CreateTime": created, "LastUpdatedTime": updated or created}


def _seed() -> dict[str, dict[str, dict]]:
    usd = {"value": "USD", "name": CURRENCIES["USD"]}
    customers = [
        {"Id": "1", "DisplayName": "Amy's Bird Sanctuary", "GivenName": "Amy", "FamilyName": "Lauterbach",
         "PrimaryEmailAddr": {"Address": "Birds@Intuit.com"}, "Active": True, "Balance": 274.0, "CurrencyRef": usd,
         "MetaData": _meta("2014-09-11T16:48:43-07:00", "2015-07-01T10:14:15-07:00")},
        {"Id": "2", "DisplayName": "Bill's Windsurf Shop", "PrimaryEmailAddr": {"Address": "Surf@Intuit.com"},
         "Active": True, "Balance": 85.0, "CurrencyRef": usd,
         "MetaData": _meta("2014-09-11T16:49:28-07:00", "2014-09-18T12:56:01-07:00")},
        {"Id": "3", "DisplayName": "Cool Cars", "Active": False, "Balance": 0, "CurrencyRef": usd,
         "MetaData": _meta("2014-09-11T16:51:22-07:00", "2015-06-18T11:17:30-07:00")},
    ]
    vendors = [
        {"Id": "1", "DisplayName": "Books by Bessie", "PrimaryEmailAddr": {"Address": "Books@Intuit.com"},
         "TaxIdentifier": "XXXXXX1111", "Active": True, "Balance": 0, "CurrencyRef": usd,
         "MetaData": _meta("2014-09-12T10:07:56-07:00", "2014-09-17T11:13:46-07:00")},
        {"Id": "2", "DisplayName": "Hicks Hardware", "Active": True, "Balance": 250.0, "CurrencyRef": usd,
         "MetaData": _meta("2014-09-12T10:07:56-07:00")},
    ]
    accounts = [
        ("1", "Services", "Income"), ("4", "Undeposited Funds", "Other Current Asset"), ("7", "Advertising", "Expense"),
        ("13", "Meals and Entertainment", "Expense"), ("29", "Office Supplies", "Expense"),
        ("33", "Accounts Payable (A/P)", "Accounts Payable"), ("35", "Checking", "Bank"), ("41", "Mastercard", "Credit Card"),
        ("79", "Sales of Product Income", "Income"),
    ]
    items = [
        {"Id": "1", "Name": "Services", "Type": "Service", "Active": True, "UnitPrice": 0,
         "IncomeAccountRef": {"value": "1", "name": "Services"}, "MetaData": _meta("2014-09-11T16:47:27-07:00")},
        {"Id": "11", "Name": "Pump", "Type": "Inventory", "Active": True, "UnitPrice": 15, "PurchaseCost": 10,
         "IncomeAccountRef": {"value": "79", "name": "Sales of Product Income"},
         "ExpenseAccountRef": {"value": "13", "name": "Meals and Entertainment"}, "QtyOnHand": 25,
         "MetaData": _meta("2014-09-18T12:17:04-07:00", "2015-07-23T11:05:17-07:00")},
    ]
    return {
        "Customer": {r["Id"]: {**r, "FullyQualifiedName": r["DisplayName"], "SyncToken": "0", "domain": "QBO",
                               "sparse": False} for r in customers},
        "Vendor": {r["Id"]: {**r, "SyncToken": "0", "domain": "QBO", "sparse": False} for r in vendors},
        "Account": {i: {"Id": i, "Name": n, "FullyQualifiedName": n, "AccountType": t, "Classification": ACCOUNT_TYPES[t],
                        "Active": True, "SubAccount": False, "CurrentBalance": 0, "CurrencyRef": usd, "SyncToken": "0",
                        "MetaData": _meta("2014-09-12T10:12:02-07:00")} for i, n, t in accounts},
        "Item": {r["Id"]: {**r, "FullyQualifiedName": r["Name"], "SyncToken": "0"} for r in items},
        "TaxRate": {
            "1": {"Id": "1", "Name": "Tucson City", "RateValue": 2, "AgencyRef": {"value": "1"}, "SpecialTaxType": "NONE",
                  "DisplayType": "ReadOnly", "Active": True, "SyncToken": "0",
                  "MetaData": _meta("2014-09-18T12:17:04-07:00")},
            "3": {"Id": "3", "Name": "California", "Description": "Sales Tax", "RateValue": 7.1, "AgencyRef": {"value": "2"},
                  "Active": True, "SyncToken": "0", "MetaData": _meta("2014-09-18T12:17:04-07:00")},
        },
        "Class": {
            "1": {"Id": "1", "Name": "Europe", "FullyQualifiedName": "Europe", "SubClass": False, "Active": True,
                  "SyncToken": "0", "MetaData": _meta("2015-07-22T13:57:27-07:00")},
            "2": {"Id": "2", "Name": "France", "FullyQualifiedName": "Europe:France", "SubClass": True,
                  "ParentRef": {"value": "1"}, "Active": False, "SyncToken": "0", "MetaData": _meta("2015-07-22T13:58:01-07:00")},
        },
        "Department": {
            "1": {"Id": "1", "Name": "Garden Services", "FullyQualifiedName": "Garden Services", "SubDepartment": False,
                  "Active": True, "SyncToken": "0", "MetaData": _meta("2015-07-22T13:57:27-07:00")},
        },
        "CompanyInfo": {
            "1": {"Id": "1", "CompanyName": "Larry's Bakery", "LegalName": "Larry's Bakery LLC", "Country": "US",
                  "FiscalYearStartMonth": "January", "CompanyStartDate": "2015-06-05", "SupportedLanguages": "en",
                  "WebAddr": {}, "CompanyAddr": {"Id": "1", "Line1": "2500 Garcia Ave", "City": "Mountain View",
                                                 "CountrySubDivisionCode": "CA", "PostalCode": "94043"},
                  "SyncToken": "4", "MetaData": _meta("2015-06-05T13:55:54-07:00", "2015-07-06T08:51:50-07:00")},
        },
        "CreditMemo": {
            "73": {"Id": "73", "DocNumber": "1026", "TxnDate": "2014-09-02", "CustomerRef": {"value": "1", "name": "Amy's Bird Sanctuary"},
                   "TotalAmt": 100.0, "RemainingCredit": 100.0, "Balance": 100.0, "CurrencyRef": usd,
                   "ClassRef": {"value": "1", "name": "Europe"},
                   "Line": [{"Id": "1", "Amount": 100.0, "DetailType": "SalesItemLineDetail",
                             "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}}},
                            {"Amount": 100.0, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}],
                   "SyncToken": "0", "MetaData": _meta("2014-09-18T13:00:00-07:00")},
        },
        "VendorCredit": {
            "157": {"Id": "157", "TxnDate": "2015-07-24", "VendorRef": {"value": "1", "name": "Books by Bessie"},
                    "APAccountRef": {"value": "33"}, "TotalAmt": 90.0, "CurrencyRef": usd,
                    "Line": [{"Id": "1", "Amount": 90.0, "DetailType": "AccountBasedExpenseLineDetail",
                              "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "7", "name": "Advertising"}}}],
                    "SyncToken": "0", "MetaData": _meta("2015-07-24T14:08:54-07:00")},
        },
        "Attachable": {
            "5000000000000010341": {"Id": "5000000000000010341", "FileName": "receipt_nov15.jpg", "ContentType": "image/jpg",
                                    "Size": 1024, "TempDownloadUri": "https://intuit-qbo.example/receipt_nov15.jpg?sig=abc",
                                    "AttachableRef": [{"IncludeOnSend": False, "EntityRef": {"type": "Account", "value": "35"}}],
                                    "SyncToken": "0", "MetaData": _meta("2015-11-17T11:05:15-08:00")},
        },
        "Bill": {}, "Invoice": {
            # Voided: QuickBooks keeps it, its amounts zeroed and "Voided" put before its PrivateNote.
            "129": {"Id": "129", "DocNumber": "1036", "TxnDate": "2014-09-19", "PrivateNote": "Voided - Spring order",
                    "CustomerRef": {"value": "1", "name": "Amy's Bird Sanctuary"}, "CurrencyRef": usd,
                    "Line": [{"Id": "1", "LineNum": 1, "Description": "Pump", "Amount": 0, "DetailType": "SalesItemLineDetail",
                              "SalesItemLineDetail": {"ItemRef": {"value": "11", "name": "Pump"}, "UnitPrice": 15, "Qty": 0}},
                             {"Amount": 0, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}],
                    "TxnTaxDetail": {"TotalTax": 0}, "TotalAmt": 0, "Balance": 0, "LinkedTxn": [],
                    "SyncToken": "1", "MetaData": _meta("2014-09-19T13:16:17-07:00", "2014-09-20T09:00:00-07:00")},
            # A bundle: its group line holds the component lines.
            "130": {"Id": "130", "DocNumber": "1037", "TxnDate": "2015-07-24",
                    "CustomerRef": {"value": "2", "name": "Bill's Windsurf Shop"}, "CurrencyRef": usd,
                    "Line": [{"Id": "1", "LineNum": 1, "Amount": 50.0, "DetailType": "SalesItemLineDetail",
                              "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}}},
                             {"Id": "2", "LineNum": 2, "Description": "Pump kit", "Amount": 45.0,
                              "DetailType": "GroupLineDetail",
                              "GroupLineDetail": {"GroupItemRef": {"value": "19", "name": "Pump kit"}, "Quantity": 1, "Line": [
                                  {"Id": "3", "Amount": 30.0, "DetailType": "SalesItemLineDetail",
                                   "SalesItemLineDetail": {"ItemRef": {"value": "11", "name": "Pump"}, "Qty": 2}},
                                  {"Id": "4", "Amount": 15.0, "DetailType": "SalesItemLineDetail",
                                   "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}, "Qty": 1}}]}},
                             {"Amount": 95.0, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}],
                    "TxnTaxDetail": {"TotalTax": 0}, "TotalAmt": 95.0, "Balance": 95.0, "LinkedTxn": [],
                    "SyncToken": "0", "MetaData": _meta("2015-07-24T10:00:00-07:00")},
        }, "Payment": {}, "JournalEntry": {}, "PurchaseOrder": {}, "Purchase": {},
    }


# -- the query language ---------------------------------------------------------------------------

_QUERY = re.compile(
    r"^\s*select\s+(?P<what>\*|count\(\*\))\s+from\s+(?P<entity>\w+)"
    r"(?:\s+where\s+(?P<where>.+?))?(?:\s+orderby\s+(?P<order>.+?))?"
    r"(?:\s+startposition\s+(?P<start>\S+))?(?:\s+maxresults\s+(?P<max>\S+))?\s*$",
    re.IGNORECASE | re.DOTALL)
_CONDITION = re.compile(r"^\s*(?P<field>[A-Za-z][\w.]*)\s*(?P<op>=|in)\s*(?P<value>.+?)\s*$", re.IGNORECASE)


def _parse_error(detail: str) -> Fault:
    return Fault("4000", "Error parsing query", f"QueryParserError: {detail}")


def _literal(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    raise _parse_error(f"Encountered \"{text}\"")


def parse_query(query: str) -> dict:
    match = _QUERY.match(query)
    if not match:
        raise _parse_error(f"Encountered \"{query}\"")
    entity = match["entity"]
    if entity not in ENTITIES.values():
        raise _parse_error(f"Invalid entity name: {entity}")  # entity names are case-sensitive
    conditions = []
    if match["where"]:
        for part in re.split(r"\s+and\s+", match["where"], flags=re.IGNORECASE):
            cond = _CONDITION.match(part)
            if not cond:
                raise _parse_error(f"Encountered \"{part.strip()}\"")
            if cond["op"].lower() == "in":
                inner = cond["value"]
                if not (inner.startswith("(") and inner.endswith(")")):
                    raise _parse_error(f"IN needs a parenthesised list: {inner}")
                values = [_literal(v) for v in inner[1:-1].split(",")]
            else:
                values = [_literal(cond["value"])]
            conditions.append((cond["field"], values))
    numbers = {}
    for key in ("start", "max"):
        if match[key] is not None:
            if not match[key].isdigit():
                raise _parse_error(f"Encountered \"{match[key]}\"")
            numbers[key] = int(match[key])
    start, limit = numbers.get("start", 1), numbers.get("max", 100)
    if start < 1:
        raise Fault("4001", "Invalid query", "QueryValidationError: STARTPOSITION must be 1 or more")
    if limit > MAX_RESULTS:
        raise Fault("4001", "Invalid query", f"QueryValidationError: value {limit} is too large. Max allowed value is {MAX_RESULTS}")
    return {"count": match["what"] != "*", "entity": entity, "conditions": conditions, "start": start, "max": limit}


def _field(record: dict, path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _sort_key(record: dict) -> tuple:
    identifier = record.get("Id", "")
    return (0, int(identifier), "") if identifier.isdigit() else (1, 0, identifier)


# -- the fake ----------------------------------------------------------------------------------------

class FakeQuickBooks:
    def __init__(self, realm: str = REALM, token: str = TOKEN):
        self.realm = realm
        self.token = token
        self.store = _seed()
        self.next_id = {name: itertools.count(max([int(i) for i in records if i.isdigit()] + [0]) + 1)
                        for name, records in self.store.items()}
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    # -- HTTP --

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v3/company/{realm}/query", self._query, methods=["GET"]),
            Route("/v3/company/{realm}/{entity}/{id}", self._read, methods=["GET"]),
            Route("/v3/company/{realm}/{entity}", self._create, methods=["POST"]),
        ])

    async def _guarded(self, request: Request, handler) -> JSONResponse:
        body = await request.body()
        with self.lock:
            self.requests.append({"method": request.method, "path": request.url.path,
                                  "user_agent": request.headers.get("user-agent", ""),
                                  "query": dict(request.query_params), "body": body.decode("utf-8", "replace")})
            try:
                auth = request.headers.get("authorization", "")
                if auth != f"Bearer {self.token}":
                    return _lowercase_fault(401, "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                                            "Token invalid" if auth else "Authorization header missing", "3200",
                                            "AUTHENTICATION")
                if request.path_params["realm"] != self.realm:
                    return _lowercase_fault(403, "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                                            None, "3100", "SERVICE")
                minor = request.query_params.get("minorversion")
                if minor is None or not minor.isdigit():
                    raise Fault("2010", "Request has invalid or unsupported property",
                                f"minorversion must be given as a number, not {minor!r}")
                return handler(request, body)
            except Fault as fault:
                return fault.response()

    async def _query(self, request: Request) -> JSONResponse:
        return await self._guarded(request, self._run_query)

    async def _read(self, request: Request) -> JSONResponse:
        return await self._guarded(request, self._read_record)

    async def _create(self, request: Request) -> JSONResponse:
        return await self._guarded(request, self._create_record)

    def _entity(self, request: Request) -> str:
        entity = ENTITIES.get(request.path_params["entity"].lower())
        if entity is None:
            raise Fault("500", "Unsupported Operation",
                        f"Operation Could not find resource for relative : {request.url.path} is not supported.")
        return entity

    def _run_query(self, request: Request, body: bytes) -> JSONResponse:
        text = request.query_params.get("query")
        if not text:
            raise _parse_error("the query parameter is missing")
        query = parse_query(text)
        entity = query["entity"]
        records = sorted(self.store[entity].values(), key=_sort_key)
        fields = {field for field, _ in query["conditions"]}
        if entity in NAME_LISTS and "Active" not in fields:
            records = [r for r in records if r.get("Active", True)]
        for field, values in query["conditions"]:
            records = [r for r in records if _field(r, field) in values]
        if query["count"]:
            return JSONResponse({"QueryResponse": {"totalCount": len(records)}, "time": _now()})
        page = records[query["start"] - 1:query["start"] - 1 + query["max"]]
        found = {entity: copy.deepcopy(page), "startPosition": query["start"], "maxResults": len(page)} if page else {}
        return JSONResponse({"QueryResponse": found, "time": _now()})

    def _read_record(self, request: Request, body: bytes) -> JSONResponse:
        entity = self._entity(request)
        identifier = request.path_params["id"]
        if entity == "CompanyInfo":  # read by the realm id
            identifier = "1" if identifier == self.realm else None
        record = self.store[entity].get(identifier) if identifier else None
        if record is None:
            raise Fault("610", "Object Not Found",
                        "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts.")
        return JSONResponse({entity: copy.deepcopy(record), "time": _now()})

    def _create_record(self, request: Request, body: bytes) -> JSONResponse:
        entity = self._entity(request)
        validate = getattr(self, f"_new_{entity.lower()}", None)
        if validate is None:
            raise Fault("500", "Unsupported Operation", f"Operation create is not supported for {entity} by this fake")
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise Fault("2010", "Request has invalid or unsupported property", "Content-Type must be application/json")
        try:
            sent = json.loads(body)
        except ValueError:
            raise Fault("2010", "Request has invalid or unsupported property", "The request body is not JSON") from None
        if not isinstance(sent, dict):
            raise Fault("2010", "Request has invalid or unsupported property", "The request body must be an object")
        unknown = sorted(set(sent) - FIELDS[entity])
        if unknown:
            raise Fault("2010", "Request has invalid or unsupported property",
                        f"Property Name:{unknown[0]} specified is unsupported or invalid", element=unknown[0])
        if "Id" in sent:
            raise Fault("2010", "Request has invalid or unsupported property", "A create cannot name an Id")
        record = validate(copy.deepcopy(sent))
        record["Id"] = str(next(self.next_id[entity]))
        record.update({"SyncToken": "0", "domain": "QBO", "sparse": False, "MetaData": _meta(_stamp())})
        self.store[entity][record["Id"]] = record
        if entity == "Payment":
            self._link_payments(record)
        return JSONResponse({entity: copy.deepcopy(record), "time": _now()})

    # -- references --

    def _exists(self, entity: str, record: dict, field: str, required: bool = False) -> str | None:
        value = _ref_value(record, field)
        if value is None:
            if required:
                raise _required(field)
            return None
        if value not in self.store[entity]:
            raise _invalid_reference(field, value)
        return value

    def _currency(self, record: dict) -> None:
        code = _ref_value(record, "CurrencyRef") or "USD"
        if code not in CURRENCIES:
            raise _enumeration("CurrencyRef", code)
        record["CurrencyRef"] = {"value": code, "name": CURRENCIES[code]}

    def _name_ref(self, entity: str, record: dict, field: str, name_field: str = "DisplayName") -> None:
        value = _ref_value(record, field)
        if value is not None:
            record[field] = {"value": value, "name": self.store[entity][value].get(name_field)}

    # -- create rules, one per entity --

    def _person(self, record: dict, kind: str) -> dict:
        names = ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")
        if not record.get("DisplayName"):
            if not any(record.get(n) for n in names):
                raise _required("DisplayName")
            record["DisplayName"] = " ".join(record[n] for n in names if record.get(n))
        display = record["DisplayName"]
        if not isinstance(display, str) or any(c in display for c in ":\t\n"):
            raise Fault("2010", "Request has invalid or unsupported property",
                        "DisplayName must be text without colon, tab or newline", element="DisplayName")
        taken = [r for e in ("Customer", "Vendor") for r in self.store[e].values() if r["DisplayName"] == display]
        if taken:
            raise Fault("6240", "Duplicate Name Exists Error",
                        f"The name supplied already exists. : Another customer, vendor or employee is already using this "
                        f"name. Please use a different name. Id={taken[0]['Id']}")
        email = record.get("PrimaryEmailAddr")
        if email is not None:
            address = email.get("Address") if isinstance(email, dict) else None
            if not isinstance(address, str) or "@" not in address or "." not in address:
                raise _business("The email address is invalid: it needs an @ and a dot")
        if "Active" in record and not isinstance(record["Active"], bool):
            raise Fault("2010", "Request has invalid or unsupported property",
                        f"Property Name:Active specified is unsupported or invalid: {record['Active']!r}", element="Active")
        record.setdefault("Active", True)
        self._currency(record)
        for field in ("TaxIdentifier", "PrimaryTaxIdentifier"):
            if isinstance(record.get(field), str):
                record[field] = _mask(record[field])
        record.update({"FullyQualifiedName": display, "PrintOnCheckName": record.get("PrintOnCheckName", display),
                       "Balance": record.get("Balance", 0)})
        if kind == "Customer":
            record.update({"Job": False, "BillWithParent": False, "Taxable": False, "BalanceWithJobs": record["Balance"],
                           "PreferredDeliveryMethod": "Print"})
        return record

    def _new_customer(self, record: dict) -> dict:
        return self._person(record, "Customer")

    def _new_vendor(self, record: dict) -> dict:
        return self._person(record, "Vendor")

    def _new_account(self, record: dict) -> dict:
        name = record.get("Name")
        if not name:
            raise _required("Name")
        if any(c in name for c in '":'):
            raise Fault("2010", "Request has invalid or unsupported property", "Account.Name cannot hold \" or :",
                        element="Name")
        if "AccountType" not in record and "AccountSubType" not in record:
            raise _required("AccountType")
        account_type = record.get("AccountType")
        if account_type not in ACCOUNT_TYPES:
            raise _enumeration("AccountType", account_type)
        if "Classification" in record:
            raise Fault("2010", "Request has invalid or unsupported property",
                        "Property Name:Classification is read only", element="Classification")
        if any(r["Name"] == name for r in self.store["Account"].values()):
            raise Fault("6240", "Duplicate Name Exists Error",
                        "The name supplied already exists. : Another account is already using this name. Please use a different name.")
        parent = self._exists("Account", record, "ParentRef")
        record.setdefault("Active", True)
        self._currency(record)
        record.update({"Classification": ACCOUNT_TYPES[account_type], "SubAccount": parent is not None,
                       "FullyQualifiedName": (self.store["Account"][parent]["Name"] + ":" + name) if parent else name,
                       "CurrentBalance": 0, "CurrentBalanceWithSubAccounts": 0})
        return record

    def _txn(self, entity: str, record: dict) -> list[dict]:
        """Checks and numbers the lines, dates, document number and currency every transaction shares."""
        lines = record.get("Line")
        if not isinstance(lines, list) or not lines:
            raise _required("Line")
        allowed = LINE_TYPES[entity]
        for n, line in enumerate(lines, 1):
            if not isinstance(line, dict):
                raise _required("Line")
            detail_type = line.get("DetailType")
            if detail_type is None:
                raise _required("Line.DetailType")
            if detail_type not in allowed:
                raise _enumeration("Line.DetailType", detail_type)
            if detail_type not in ("DescriptionOnly", "SubTotalLineDetail") and "Amount" not in line:
                raise _required("Line.Amount")
            if "Amount" in line:
                _number(line["Amount"], "Line.Amount")
            detail = line.get(detail_type)
            if detail_type not in ("DescriptionOnly", "SubTotalLineDetail") and not isinstance(detail, dict):
                raise _required(f"Line.{detail_type}")
            line["Id"] = str(n)
            line["LineNum"] = n
        for field in ("TxnDate", "DueDate"):
            if field in record:
                record[field] = _date(record[field], field)
        record.setdefault("TxnDate", datetime.now(PACIFIC).date().isoformat())
        number = record.get("DocNumber")
        if number is not None and any(r.get("DocNumber") == number for r in self.store[entity].values()):
            raise Fault("6140", "Duplicate Document Number Error",
                        "Duplicate Document Number Error : You must specify a different number. This number has already been used.")
        if number is None and entity not in ("Purchase", "Bill"):  # QuickBooks numbers neither
            record["DocNumber"] = str(1001 + len(self.store[entity]))
        if "ExchangeRate" in record:
            _number(record["ExchangeRate"], "ExchangeRate")
        self._currency(record)
        self._exists("Class", record, "ClassRef")
        self._exists("Department", record, "DepartmentRef")
        return lines

    def _new_invoice(self, record: dict) -> dict:
        self._exists("Customer", record, "CustomerRef", required=True)
        lines = self._txn("Invoice", record)
        total = 0.0
        for line in lines:
            if line["DetailType"] == "SalesItemLineDetail":
                detail = line["SalesItemLineDetail"]
                if self._exists("Item", detail, "ItemRef") is not None:  # a line without an item is documentation
                    total += line["Amount"]
                    self._name_ref("Item", detail, "ItemRef", "Name")
                detail.setdefault("TaxCodeRef", {"value": "NON"})
            elif line["DetailType"] == "DiscountLineDetail":
                total -= line["Amount"]
        subtotal = sum(l["Amount"] for l in lines if l["DetailType"] == "SalesItemLineDetail")
        lines.append({"Amount": _money(subtotal), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        self._name_ref("Customer", record, "CustomerRef")
        due = record.get("DueDate") or (date.fromisoformat(record["TxnDate"]) + timedelta(days=30)).isoformat()
        record.update({"DueDate": due, "TotalAmt": _money(total), "Balance": _money(total), "TxnTaxDetail": {"TotalTax": 0},
                       "LinkedTxn": [], "EmailStatus": "NotSet", "PrintStatus": "NeedToPrint"})
        return record

    def _new_payment(self, record: dict) -> dict:
        customer = self._exists("Customer", record, "CustomerRef", required=True)
        if "TotalAmt" not in record:
            raise _required("TotalAmt")
        total = _number(record["TotalAmt"], "TotalAmt")
        if total <= 0:
            raise _business("The payment amount must be greater than zero")
        if "TxnDate" in record:
            record["TxnDate"] = _date(record["TxnDate"], "TxnDate")
        record.setdefault("TxnDate", datetime.now(PACIFIC).date().isoformat())
        self._exists("Account", record, "DepositToAccountRef")
        self._currency(record)
        lines = record.get("Line", [])
        if not isinstance(lines, list):
            raise _required("Line")
        applied = 0.0
        invoices = []
        for line in lines:
            amount = _number(line.get("Amount"), "Line.Amount")
            linked = line.get("LinkedTxn")
            if not isinstance(linked, list) or not linked:
                raise _required("Line.LinkedTxn")
            for txn in linked:
                if txn.get("TxnType") != "Invoice":
                    raise _enumeration("LinkedTxn.TxnType", txn.get("TxnType"))
                invoice = self.store["Invoice"].get(txn.get("TxnId"))
                if invoice is None:
                    raise _invalid_reference("LinkedTxn.TxnId", txn.get("TxnId"))
                if invoice["CustomerRef"]["value"] != customer:
                    raise _business("The invoice this payment applies to belongs to another customer")
                if amount > invoice["Balance"] + 1e-9:
                    raise _business("The payment applied is more than the invoice's open balance")
                invoices.append((invoice, amount))
            applied += amount
        if applied > total + 1e-9:
            raise _business("The amount applied is more than the payment")
        for invoice, amount in invoices:
            invoice["Balance"] = _money(invoice["Balance"] - amount)
        self._name_ref("Customer", record, "CustomerRef")
        record.update({"Line": lines, "UnappliedAmt": _money(total - applied), "ProcessPayment": False})
        return record

    def _link_payments(self, payment: dict) -> None:
        for line in payment["Line"]:
            for txn in line["LinkedTxn"]:
                self.store["Invoice"][txn["TxnId"]]["LinkedTxn"].append({"TxnId": payment["Id"], "TxnType": "Payment"})

    def _new_journalentry(self, record: dict) -> dict:
        lines = self._txn("JournalEntry", record)
        sums = {"Debit": 0.0, "Credit": 0.0}
        for line in lines:
            detail = line["JournalEntryLineDetail"]
            posting = detail.get("PostingType")
            if posting not in sums:
                raise _enumeration("PostingType", posting)
            if line["Amount"] < 0:
                raise _business("Journal entry lines cannot have negative amounts; post a credit instead")
            self._exists("Account", detail, "AccountRef", required=True)
            self._name_ref("Account", detail, "AccountRef", "Name")
            sums[posting] += line["Amount"]
        if abs(sums["Debit"] - sums["Credit"]) > 1e-9:
            raise _business("Transaction is not balanced: the debits and credits must be equal")
        record.update({"TotalAmt": _money(sums["Debit"]), "Adjustment": record.get("Adjustment", False)})
        return record

    def _expense_lines(self, lines: list[dict]) -> float:
        total = 0.0
        for line in lines:
            if line["DetailType"] == "ItemBasedExpenseLineDetail":
                self._exists("Item", line["ItemBasedExpenseLineDetail"], "ItemRef", required=True)
                self._name_ref("Item", line["ItemBasedExpenseLineDetail"], "ItemRef", "Name")
            else:
                self._exists("Account", line["AccountBasedExpenseLineDetail"], "AccountRef", required=True)
                self._name_ref("Account", line["AccountBasedExpenseLineDetail"], "AccountRef", "Name")
            total += line["Amount"]
        return _money(total)

    def _new_purchaseorder(self, record: dict) -> dict:
        self._exists("Vendor", record, "VendorRef", required=True)
        self._exists("Customer", record, "ShipTo")
        status = record.setdefault("POStatus", "Open")
        if status not in ("Open", "Closed"):
            raise _enumeration("POStatus", status)
        lines = self._txn("PurchaseOrder", record)
        total = self._expense_lines(lines)
        lines.append({"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        if "APAccountRef" not in record:
            record["APAccountRef"] = {"value": "33", "name": "Accounts Payable (A/P)"}
        self._exists("Account", record, "APAccountRef")
        self._name_ref("Vendor", record, "VendorRef")
        record["TotalAmt"] = total
        return record

    def _new_bill(self, record: dict) -> dict:
        self._exists("Vendor", record, "VendorRef", required=True)
        lines = self._txn("Bill", record)
        for line in lines:
            self._exists("Class", line[line["DetailType"]], "ClassRef")
        total = self._expense_lines(lines)
        record.setdefault("APAccountRef", {"value": "33", "name": "Accounts Payable (A/P)"})
        self._exists("Account", record, "APAccountRef")
        self._name_ref("Vendor", record, "VendorRef")
        due = record.get("DueDate") or (date.fromisoformat(record["TxnDate"]) + timedelta(days=30)).isoformat()
        record.update({"DueDate": due, "TotalAmt": total, "Balance": total, "LinkedTxn": []})
        return record

    def _new_purchase(self, record: dict) -> dict:
        payment_type = record.get("PaymentType")
        if payment_type is None:
            raise _required("PaymentType")
        if payment_type not in ("Cash", "Check", "CreditCard"):
            raise _enumeration("PaymentType", payment_type)
        account = self._exists("Account", record, "AccountRef", required=True)
        wanted = "Credit Card" if payment_type == "CreditCard" else "Bank"
        if self.store["Account"][account]["AccountType"] != wanted:
            raise _business(f"A {payment_type} purchase is paid from a {wanted} account")
        entity = record.get("EntityRef")
        if entity is not None:
            kind = entity.get("type") if isinstance(entity, dict) else None
            if kind not in ("Vendor", "Customer", "Employee"):
                raise _enumeration("EntityRef.type", kind)
            if kind != "Employee":
                self._exists(kind, record, "EntityRef")
                entity["name"] = self.store[kind][entity["value"]]["DisplayName"]
        lines = self._txn("Purchase", record)
        record["TotalAmt"] = self._expense_lines(lines)
        self._name_ref("Account", record, "AccountRef", "Name")
        return record


class RunningFake:
    """A FakeQuickBooks served by uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, fake: FakeQuickBooks, port: int):
        self.fake = fake
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fake-quickbooks", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake QuickBooks server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
