"""Paging styles behind the unified cursor, and next-page links that must not steer the gateway."""

import pytest

from gateway.cursor import Position
from gateway.mapping import PagingSpec
from gateway.paging import LinkError, following, link_params, link_query, page_document, previous

BASE = "https://api.books.test/v2"


def spec(**kwargs) -> PagingSpec:
    return PagingSpec(**kwargs)


def test_the_page_document_counts_offsets_pages_and_starts():
    doc = page_document(spec(style="page", first_page=1), Position(0, 40, 2), 20)
    assert doc == {"limit": 20, "offset": 40, "start": 41, "number": 3, "token": None}
    assert page_document(spec(style="token"), Position(0, 5, 1, "tok"), 5)["token"] == "tok"


@pytest.mark.parametrize("style, total, count, more", [
    ("offset", 10, 5, True), ("offset", 10, 10, False), ("offset", None, 5, True), ("offset", None, 4, False),
    ("page", None, 5, True), ("offset", 100, 0, False),  # an empty page ends the list whatever the total
])
def test_offset_and_page_styles_know_when_more_follow(style, total, count, more):
    after = following(spec(style=style), Position(), count, 5, total, None, sources=1)
    assert (after is not None) is more
    if more:
        assert after == Position(0, count, 1, None)


def test_token_and_link_styles_follow_the_providers_next_page():
    assert following(spec(style="token"), Position(), 3, 3, None, "abc", 1) == Position(0, 3, 1, "abc")
    assert following(spec(style="token"), Position(), 3, 3, None, None, 1) is None
    assert following(spec(style="link"), Position(), 3, 3, None, "page=2", 1) == Position(0, 3, 1, "page=2")


def test_an_exhausted_source_hands_over_to_the_next():
    assert following(spec(style="offset"), Position(0, 10, 2), 2, 5, 12, None, sources=2) == Position(1)
    assert following(spec(style="offset"), Position(1, 10, 2), 2, 5, 12, None, sources=2) is None


def test_previous_pages_exist_for_offsets_and_page_numbers_only():
    assert previous(spec(style="offset"), Position(0, 10, 2), 5) == Position(0, 5, 1)
    assert previous(spec(style="offset"), Position(), 5) is None
    assert previous(spec(style="token"), Position(0, 10, 2, "t"), 5) is None


@pytest.mark.parametrize("link, query", [
    ("https://api.books.test/v2/invoices?page=2&size=50", "page=2&size=50"),
    ("/v2/invoices?cursor=a%2Fb", "cursor=a%2Fb"),
    ("?page=3", "page=3"),
])
def test_a_next_link_on_the_same_host_and_path_keeps_only_its_query(link, query):
    assert link_query(link, BASE, "/invoices") == query


@pytest.mark.parametrize("link", [
    "https://evil.test/v2/invoices?page=2",
    "http://api.books.test/v2/invoices?page=2",       # scheme downgrade
    "https://api.books.test:8443/v2/invoices?page=2",
    "https://api.books.test/v2/contacts?page=2",      # another path
    "/v2/invoices/../admin?page=2",
    "//evil.test/v2/invoices?page=2",
])
def test_a_next_link_elsewhere_is_refused(link):
    with pytest.raises(LinkError):
        link_query(link, BASE, "/invoices")


def test_link_params_keep_blank_values_and_order():
    assert link_params("a=1&b=&a=2") == [("a", "1"), ("b", ""), ("a", "2")]


# -- link paging through the gateway, with the provider mocked ---------------------------------

import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.settings import from_environ  # noqa: E402

LINKED = """\
provider: linked
base_url: https://api.books.test/v2
auth: {type: bearer, credential: token}
objects:
  contacts:
    unify: {id: id, remote_id: id, name: name}
    list:
      path: /contacts
      query: {per_page: page.limit}
      records: items
      paging: {style: link, next: links.next, max_limit: 2}
"""
H = {"x-api-key": "k", "x-connection-token": "t"}


@pytest.fixture
def linked(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "linked.yaml").write_text(LINKED)
    (tmp_path / "c.yaml").write_text("- {token: t, provider: linked, credentials: {token: secret}}\n")
    env = {"GATEWAY_API_KEYS": "k", "GATEWAY_CONNECTIONS": str(tmp_path / "c.yaml"),
           "GATEWAY_MAPPINGS": str(tmp_path / "m"), "GATEWAY_CURSOR_SECRET": "s"}
    with TestClient(create_app(from_environ(env), environ=env, transport=httpx.AsyncHTTPTransport())) as client:
        yield client


def test_a_link_cursor_replays_only_the_links_query_on_the_mapped_path(linked, httpx_mock):
    httpx_mock.add_response(url="https://api.books.test/v2/contacts?per_page=2",
                            json={"items": [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}],
                                  "links": {"next": "https://api.books.test/v2/contacts?per_page=2&after=2"}})
    httpx_mock.add_response(url="https://api.books.test/v2/contacts?per_page=2&after=2",
                            json={"items": [{"id": "3", "name": "c"}], "links": {"next": None}})
    first = linked.get("/accounting/contacts", headers=H).json()
    assert [c["id"] for c in first["data"]] == ["1", "2"] and first["next_cursor"]
    second = linked.get("/accounting/contacts", headers=H, params={"cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in second["data"]] == ["3"] and second["next_cursor"] is None
    assert httpx_mock.get_requests()[1].headers["authorization"] == "Bearer secret"


def test_a_next_link_to_another_host_is_a_502_not_a_request(linked, httpx_mock):
    httpx_mock.add_response(url="https://api.books.test/v2/contacts?per_page=2",
                            json={"items": [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}],
                                  "links": {"next": "https://collector.evil.test/steal?per_page=2"}})
    response = linked.get("/accounting/contacts", headers=H)
    assert response.status_code == 502 and response.json()["code"] == "upstream_unmappable"
    assert "leaves" in response.json()["message"]
