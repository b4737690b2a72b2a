"""The unified accounting objects: Panora's accounting schemas as msgspec Structs.

Field names, types and nullability follow Panora's OpenAPI contract. A nullable
field defaults to None and is always encoded; a non-nullable optional field
defaults to UNSET, so it may be absent but never null, and is left out of
responses when no mapping fills it.
"""

import functools
import typing
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

# int | float keeps 10000 as 10000 on the wire instead of 10000.0.
Number = int | float


class Model(msgspec.Struct, kw_only=True):
    pass


class LineItem(Model):
    name: str | None = None
    value: Number | None = None
    type: str | None = None
    parent_item: str | None = None
    remote_id: str | None = None
    remote_generated_at: datetime | None = None
    company_info_id: str | None = None
    created_at: datetime | UnsetType = UNSET
    modified_at: datetime | UnsetType = UNSET


class AccountInput(Model):
    name: str | None = None
    description: str | None = None
    classification: str | None = None
    type: str | None = None
    status: str | None = None
    current_balance: Number | None = None
    currency: str | None = None
    account_number: str | None = None
    parent_account: str | None = None
    company_info_id: str | None = None
    field_mappings: dict[str, Any] | None = None


class AccountOutput(AccountInput):
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class AddressOutput(Model):
    type: str | None = None
    street_1: str | None = None
    street_2: str | None = None
    city: str | None = None
    state: str | None = None
    country_subdivision: str | None = None
    country: str | None = None
    zip: str | None = None
    contact_id: str | None = None
    company_info_id: str | None = None
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class AttachmentInput(Model):
    file_name: str | None = None
    file_url: str | None = None
    account_id: str | None = None
    field_mappings: dict[str, Any] | None = None


class AttachmentOutput(AttachmentInput):
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class BalanceSheetOutput(Model):
    name: str | None = None
    currency: str | None = None
    company_info_id: str | None = None
    date: datetime | None = None
    net_assets: Number | None = None
    assets: list[str] | None = None
    liabilities: list[str] | None = None
    equity: list[str] | None = None
    remote_generated_at: datetime | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class CashflowStatementOutput(Model):
    name: str | None = None
    currency: str | None = None
    company_id: str | None = None
    start_period: datetime | None = None
    end_period: datetime | None = None
    cash_at_beginning_of_period: Number | None = None
    cash_at_end_of_period: Number | None = None
    remote_generated_at: datetime | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class CompanyInfoOutput(Model):
    name: str | None = None
    legal_name: str | None = None
    tax_number: str | None = None
    fiscal_year_end_month: Number | None = None
    fiscal_year_end_day: Number | None = None
    currency: str | None = None
    urls: list[str] | None = None
    tracking_categories: list[str] | None = None
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    remote_created_at: datetime | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class ContactInput(Model):
    name: str | None = None
    is_supplier: bool | None = None
    is_customer: bool | None = None
    email_address: str | None = None
    tax_number: str | None = None
    status: str | None = None
    currency: str | None = None
    remote_updated_at: str | None = None
    company_info_id: str | None = None
    field_mappings: dict[str, Any] | None = None


class ContactOutput(ContactInput):
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class CreditNoteOutput(Model):
    transaction_date: datetime | None = None
    status: str | None = None
    number: str | None = None
    contact_id: str | None = None
    company_id: str | None = None
    exchange_rate: str | None = None
    total_amount: Number | None = None
    remaining_credit: Number | None = None
    tracking_categories: list[str] | None = None
    currency: str | None = None
    payments: list[str] | None = None
    applied_payments: list[str] | None = None
    accounting_period_id: str | None = None
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    remote_created_at: datetime | None = None
    remote_updated_at: datetime | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class ExpenseInput(Model):
    transaction_date: datetime | None = None
    total_amount: Number | None = None
    sub_total: Number | None = None
    total_tax_amount: Number | None = None
    currency: str | None = None
    exchange_rate: str | None = None
    memo: str | None = None
    account_id: str | None = None
    contact_id: str | None = None
    company_info_id: str | None = None
    tracking_categories: list[str] | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None


class ExpenseOutput(ExpenseInput):
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    remote_created_at: datetime | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class IncomeStatementOutput(Model):
    name: str | None = None
    currency: str | None = None
    start_period: datetime | None = None
    end_period: datetime | None = None
    gross_profit: Number | None = None
    net_operating_income: Number | None = None
    net_income: Number | None = None
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class InvoiceInput(Model):
    type: str | None = None
    number: str | None = None
    issue_date: datetime | None = None
    due_date: datetime | None = None
    paid_on_date: datetime | None = None
    memo: str | None = None
    currency: str | None = None
    exchange_rate: str | None = None
    total_discount: Number | None = None
    sub_total: Number | None = None
    status: str | None = None
    total_tax_amount: Number | None = None
    total_amount: Number | None = None
    balance: Number | None = None
    contact_id: str | None = None
    accounting_period_id: str | None = None
    tracking_categories: list[str] | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None


class InvoiceOutput(InvoiceInput):
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    remote_updated_at: datetime | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class ItemOutput(Model):
    name: str | None = None
    status: str | None = None
    unit_price: Number | None = None
    purchase_price: Number | None = None
    sales_account: str | None = None
    purchase_account: str | None = None
    company_info_id: str | None = None
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_updated_at: datetime | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class JournalEntryInput(Model):
    transaction_date: datetime | None = None
    payments: list[str] | None = None
    applied_payments: list[str] | None = None
    memo: str | None = None
    currency: str | None = None
    exchange_rate: str | None = None
    id_acc_company_info: str | UnsetType = UNSET
    journal_number: str | None = None
    tracking_categories: list[str] | None = None
    id_acc_accounting_period: str | None = None
    posting_status: str | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None


class JournalEntryOutput(JournalEntryInput):
    id: str | None = None
    remote_id: str | UnsetType = UNSET
    remote_created_at: datetime | None = None
    remote_modiified_at: datetime | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class PaymentInput(Model):
    invoice_id: str | None = None
    transaction_date: datetime | None = None
    contact_id: str | None = None
    account_id: str | None = None
    currency: str | None = None
    exchange_rate: str | None = None
    total_amount: Number | None = None
    type: str | None = None
    company_info_id: str | None = None
    accounting_period_id: str | None = None
    tracking_categories: list[str] | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None


class PaymentOutput(PaymentInput):
    id: str | None = None
    remote_id: str | None = None
    remote_updated_at: datetime | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class PhoneNumberOutput(Model):
    number: str | None = None
    type: str | None = None
    company_info_id: str | None = None
    contact_id: str | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class PurchaseOrderInput(Model):
    status: str | None = None
    issue_date: datetime | None = None
    purchase_order_number: str | None = None
    delivery_date: datetime | None = None
    delivery_address: str | None = None
    customer: str | None = None
    vendor: str | None = None
    memo: str | None = None
    company_id: str | None = None
    total_amount: Number | None = None
    currency: str | None = None
    exchange_rate: str | None = None
    tracking_categories: list[str] | None = None
    accounting_period_id: str | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None


class PurchaseOrderOutput(PurchaseOrderInput):
    id: str | None = None
    remote_id: str | None = None
    remote_created_at: datetime | None = None
    remote_updated_at: datetime | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class TaxRateOutput(Model):
    description: str | None = None
    total_tax_ratge: Number | None = None
    effective_tax_rate: Number | None = None
    company_id: str | None = None
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class TrackingCategoryOutput(Model):
    name: str | None = None
    status: str | None = None
    category_type: str | None = None
    parent_category: str | None = None
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    remote_data: dict[str, Any] | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None


class TransactionOutput(Model):
    transaction_type: str | None = None
    number: str | None = None
    transaction_date: datetime | None = None
    total_amount: str | None = None
    exchange_rate: str | None = None
    currency: str | None = None
    tracking_categories: list[str] | None = None
    account_id: str | None = None
    contact_id: str | None = None
    company_info_id: str | None = None
    accounting_period_id: str | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | UnsetType = UNSET
    created_at: datetime | UnsetType = UNSET
    remote_data: dict[str, Any] | None = None
    modified_at: datetime | UnsetType = UNSET
    remote_updated_at: datetime | None = None


class VendorCreditOutput(Model):
    number: str | None = None
    transaction_date: datetime | None = None
    vendor: str | None = None
    total_amount: str | None = None
    currency: str | None = None
    exchange_rate: str | None = None
    company_id: str | None = None
    tracking_categories: list[str] | None = None
    accounting_period_id: str | None = None
    line_items: list[LineItem] | UnsetType = UNSET
    field_mappings: dict[str, Any] | None = None
    id: str | None = None
    remote_id: str | None = None
    created_at: datetime | UnsetType = UNSET
    modified_at: datetime | UnsetType = UNSET
    remote_updated_at: datetime | None = None
    remote_data: dict[str, Any] | None = None


class UnifiedObject(msgspec.Struct, frozen=True):
    """One object of the unified API: its path segment and its models."""

    name: str
    output: type[Model]
    input: type[Model] | None = None  # None: the object cannot be created


OBJECTS: dict[str, UnifiedObject] = {
    o.name: o
    for o in (
        UnifiedObject("accounts", AccountOutput, AccountInput),
        UnifiedObject("addresses", AddressOutput),
        UnifiedObject("attachments", AttachmentOutput, AttachmentInput),
        UnifiedObject("balancesheets", BalanceSheetOutput),
        UnifiedObject("cashflowstatements", CashflowStatementOutput),
        UnifiedObject("companyinfos", CompanyInfoOutput),
        UnifiedObject("contacts", ContactOutput, ContactInput),
        UnifiedObject("creditnotes", CreditNoteOutput),
        UnifiedObject("expenses", ExpenseOutput, ExpenseInput),
        UnifiedObject("incomestatements", IncomeStatementOutput),
        UnifiedObject("invoices", InvoiceOutput, InvoiceInput),
        UnifiedObject("items", ItemOutput),
        UnifiedObject("journalentries", JournalEntryOutput, JournalEntryInput),
        UnifiedObject("payments", PaymentOutput, PaymentInput),
        UnifiedObject("phonenumbers", PhoneNumberOutput),
        UnifiedObject("purchaseorders", PurchaseOrderOutput, PurchaseOrderInput),
        UnifiedObject("taxrates", TaxRateOutput),
        UnifiedObject("trackingcategories", TrackingCategoryOutput),
        UnifiedObject("transactions", TransactionOutput),
        UnifiedObject("vendorcredits", VendorCreditOutput),
    )
}


@functools.cache
def _field_names(model: type[Model]) -> frozenset[str]:
    return frozenset(model.__struct_fields__)


@functools.cache
def nested_models(model: type[Model]) -> dict[str, type[Model]]:
    """Fields of `model` that hold further models (line items), by name."""
    out = {}
    for field in msgspec.structs.fields(model):
        stack = [field.type]
        while stack:
            kind = stack.pop()
            if isinstance(kind, type) and issubclass(kind, Model):
                out[field.name] = kind
            stack.extend(typing.get_args(kind))
    return out


def unknown_fields(raw: dict[str, Any], model: type[Model], at: str = "$") -> list[str]:
    """Paths of the members of a request body that `model` does not define.

    Panora accepts them, so they are no error; the caller is told instead."""
    known = _field_names(model)
    nested = nested_models(model)
    if not nested and known.issuperset(raw):
        return []  # the common case, in one set operation
    out = [f"{at}.{name}" for name in raw if name not in known]
    for name, inner in nested.items():
        value = raw.get(name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, dict):
                where = f"{at}.{name}[{i}]" if isinstance(value, list) else f"{at}.{name}"
                out += unknown_fields(item, inner, where)
    return out
