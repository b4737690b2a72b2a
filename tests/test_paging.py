"""Paging styles behind the unified cursor, and next-page links that must not steer the gateway."""

import random

import pytest

from gateway.cursor import Position
from gateway.mapping import MappingError, PagingSpec, load_dir
from gateway.paging import (
    LinkError,
    following,
    link_params,
    link_query,
    page_document,
    previous,
    skipped,
)

BASE = "https://api.books.test/v2"


def spec(**kwargs) -> PagingSpec:
    return PagingSpec(**kwargs)


def test_the_page_document_counts_offsets_pages_and_starts():
    doc = page_document(spec(style="page", first_page=1), Position(0, 40), 20)
    assert doc == {"limit": 20, "offset": 40, "start": 41, "number": 3, "token": None}
    assert page_document(spec(style="token"), Position(0, 5, "tok"), 5)["token"] == "tok"


def test_a_page_number_comes_from_the_records_served_whatever_the_limit():
    """50 served at 50 a page; then 20 a page: page 3 (records 40-59) less the 10 served."""
    paging = spec(style="page", first_page=1)
    assert page_document(paging, Position(0, 50), 20)["number"] == 3
    assert skipped(paging, Position(0, 50), 20) == 10
    # 10 of that page served, none left over: the next starts at record 60, page 4 at 20.
    after = following(paging, Position(0, 50), 20, 20, None, None, 1, served=10, rest=0)
    assert after == Position(0, 60)
    assert page_document(paging, after, 20)["number"] == 4 and skipped(paging, after, 20) == 0


@pytest.mark.parametrize("style, total, count, more", [
    ("offset", 10, 5, True), ("offset", 10, 10, False), ("offset", None, 5, True), ("offset", None, 4, False),
    ("page", None, 5, True), ("offset", 100, 0, False),  # an empty page ends the list whatever the total
])
def test_offset_and_page_styles_know_when_more_follow(style, total, count, more):
    after = following(spec(style=style), Position(), count, 5, total, None, 1, served=count, rest=0)
    assert (after is not None) is more
    if more:
        assert after == Position(0, count)


def test_token_and_link_styles_follow_the_providers_next_page():
    assert following(spec(style="token"), Position(), 3, 3, None, "abc", 1, served=3, rest=0) == Position(0, 3, "abc")
    assert following(spec(style="token"), Position(), 3, 3, None, None, 1, served=3, rest=0) is None
    assert following(spec(style="link"), Position(), 3, 3, None, "page=2", 1, served=3, rest=0) == Position(0, 3, "page=2")


@pytest.mark.parametrize("style, position, after", [
    # A provider that answered 5 where 3 were asked: the next unified page starts at the 4th of them.
    ("token", Position(0, 6, "t2"), Position(0, 9, "t2", 3)),
    ("token", Position(0, 9, "t2", 3), Position(0, 12, "t2", 6)),
    ("offset", Position(0, 6), Position(0, 9)),
])
def test_a_page_longer_than_asked_resumes_at_its_next_record(style, position, after):
    assert following(spec(style=style), position, 8, 3, None, "t3", 1, served=3, rest=2) == after


def test_an_exhausted_source_hands_over_to_the_next():
    assert following(spec(style="offset"), Position(0, 10), 2, 5, 12, None, 2, served=2, rest=0) == Position(1)
    assert following(spec(style="offset"), Position(1, 10), 2, 5, 12, None, 2, served=2, rest=0) is None


def test_previous_pages_exist_for_offsets_and_page_numbers_only():
    assert previous(spec(style="offset"), Position(0, 10), 5) == Position(0, 5)
    assert previous(spec(style="offset"), Position(), 5) is None
    assert previous(spec(style="token"), Position(0, 10, "t"), 5) is None


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


@pytest.mark.parametrize("style, next_page", [("token", "t2"), ("link", "page=2")])
def test_token_and_link_paging_end_on_an_empty_page_whatever_its_next_page_says(style, next_page):
    """A provider that keeps naming a next page while answering none would page forever."""
    paging = spec(style=style)
    assert following(paging, Position(0, 6, "t1"), 0, 3, None, next_page, 1, served=0, rest=0) is None
    # With another source after it, the list goes on there, from its start.
    assert following(paging, Position(0, 6, "t1"), 0, 3, None, next_page, 2, served=0, rest=0) == Position(1)
    # One record is enough to follow it; the skip of the page before does not carry over.
    assert following(paging, Position(0, 6, "t1", 2), 1, 3, None, next_page, 1, served=1, rest=0) == \
        Position(0, 7, next_page)
    assert following(paging, Position(0, 6, "t1"), 3, 3, None, "", 1, served=3, rest=0) is None


@pytest.mark.parametrize("style", ["offset", "page"])
def test_offset_and_page_paging_end_on_an_empty_page_or_the_total(style):
    paging = spec(style=style)
    assert following(paging, Position(0, 10), 0, 5, 100, None, 1, served=0, rest=0) is None
    assert following(paging, Position(0, 10), 0, 5, None, None, 2, served=0, rest=0) == Position(1)
    # The total counts the provider's records: 10 before, 5 now, 15 in all.
    assert following(paging, Position(0, 10), 5, 5, 15, None, 1, served=5, rest=0) is None
    assert following(paging, Position(0, 10), 5, 5, 16, None, 1, served=5, rest=0) == Position(0, 15)
    # A short page without a total is the last; a full one may not be.
    assert following(paging, Position(0, 10), 4, 5, None, None, 1, served=4, rest=0) is None
    assert following(paging, Position(0, 10), 5, 5, None, None, 1, served=5, rest=0) == Position(0, 15)


def test_a_total_counts_from_the_start_of_the_page_not_from_the_records_served():
    """Record 12 at 5 a page: page 2 (records 10-14), 2 of them served before. 3 more now."""
    paging = spec(style="page")
    assert following(paging, Position(0, 12), 5, 5, 16, None, 1, served=3, rest=0) == Position(0, 15)
    assert following(paging, Position(0, 12), 5, 5, 15, None, 1, served=3, rest=0) is None


def test_a_page_provider_numbered_by_its_own_size_stays_so():
    paging = spec(style="page", first_page=1)
    # Asked for 3, it answered 5: the rest of its page 0 first, then its page 1.
    first = following(paging, Position(), 5, 3, None, None, 1, served=3, rest=2)
    assert first == Position(0, 3, None, 3, 0)
    assert page_document(paging, first, 3)["number"] == 1 and skipped(paging, first, 3) == 3
    second = following(paging, first, 5, 3, None, None, 1, served=2, rest=0)
    assert second == Position(0, 5, page=1)
    assert page_document(paging, second, 3)["number"] == 2 and skipped(paging, second, 3) == 0


def test_skipped_records_by_style():
    assert skipped(spec(style="offset"), Position(0, 7), 5) == 0
    assert skipped(spec(style="page"), Position(0, 7), 5) == 2
    assert skipped(spec(style="token"), Position(0, 7, "t", 4), 5) == 4
    assert skipped(spec(style="link"), Position(0, 7, "q", 1), 5) == 1
    assert skipped(spec(style="none"), Position(0, 7), 5) == 7  # the whole list, every time


def test_the_page_document_of_a_zero_based_provider_and_of_other_styles():
    assert page_document(spec(style="page", first_page=0), Position(0, 10), 5) == \
        {"limit": 5, "offset": 10, "start": 11, "number": 2, "token": None}
    assert page_document(spec(style="offset"), Position(0, 0, "t"), 5)["token"] is None  # tokens are token paging's
    assert page_document(spec(style="page"), Position(0, 12, None, 2, 3), 5)["number"] == 4


def test_previous_steps_back_a_limit_and_not_before_the_start():
    assert previous(spec(style="offset"), Position(0, 3), 5) == Position(0, 0)
    assert previous(spec(style="page"), Position(1, 10), 5) == Position(1, 5)
    assert previous(spec(style="link"), Position(0, 10, "q"), 5) is None
    assert previous(spec(style="none"), Position(0, 10), 5) is None


# -- link paging through the gateway, with the provider mocked ---------------------------------

import httpx  # noqa: E402
from conftest import in_process  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402


PAGED = """\
provider: paged
base_url: https://api.books.test/v2
auth: {type: bearer, credential: token}
objects:
  contacts:
    unify: {id: id, remote_id: id, name: name}
    list:
      path: /contacts
      query: QUERY
      records: items
      paging: {style: STYLE, next: NEXT, max_limit: MAX, page_size: SIZE}
"""
H = {"x-api-key": "k", "x-connection-token": "t"}


def gateway_for(tmp_path, style: str, query: str, next: str = "next", max_limit: int = 100,
                page_size: int | None = None) -> TestClient:
    """The gateway in process, in front of a mocked provider paged this way."""
    mapping = PAGED.replace("STYLE", style).replace("QUERY", query).replace("NEXT", next).replace("MAX", str(max_limit))
    mapping = mapping.replace("SIZE", "null" if page_size is None else str(page_size))
    return in_process(tmp_path, "- {token: t, provider: paged, credentials: {token: secret}}\n", {"paged": mapping},
                      GATEWAY_CURSOR_SECRET="s")


@pytest.fixture
def linked(tmp_path):
    with gateway_for(tmp_path, "link", "{per_page: page.limit}", next="links.next", max_limit=2) as client:
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


# -- cursors that resume at the next record, through the gateway --------------------------

def walk(client: TestClient, limits: list[int]) -> list[list[str]]:
    """The ids of each unified page, paging with these limits in turn."""
    pages, cursor = [], None
    for limit in limits:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        body = client.get("/accounting/contacts", headers=H, params=params).json()
        pages.append([c["id"] for c in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return pages


def test_page_paging_resumes_at_the_next_record_when_the_limit_changes(tmp_path, httpx_mock):
    ids = [str(n) for n in range(1, 12)]

    def pages(request: httpx.Request) -> httpx.Response:
        number, size = int(request.url.params["page"]), int(request.url.params["pageSize"])
        return httpx.Response(200, json={"items": [{"id": i, "name": i} for i in ids[(number - 1) * size:number * size]]})

    httpx_mock.add_callback(pages, is_reusable=True)
    with gateway_for(tmp_path, "page", "{page: page.number, pageSize: page.limit}") as client:
        walked = walk(client, [3, 2, 4, 5, 5])
    assert sum(walked, []) == ids, walked  # each record once, in order
    assert walked[:2] == [["1", "2", "3"], ["4"]]  # page 2 at 2 a page is 3-4, and 3 was served


def test_a_provider_that_answers_more_than_asked_is_served_limit_at_a_time(tmp_path, httpx_mock):
    httpx_mock.add_response(url="https://api.books.test/v2/contacts?pageSize=2",
                            json={"items": [{"id": str(n), "name": "x"} for n in range(1, 6)], "next": "t2"},
                            is_reusable=True)
    httpx_mock.add_response(url="https://api.books.test/v2/contacts?pageSize=2&after=t2",
                            json={"items": [{"id": "6", "name": "x"}], "next": None})
    with gateway_for(tmp_path, "token", "{pageSize: page.limit, after: page.token}") as client:
        walked = walk(client, [2] * 6)
    assert walked == [["1", "2"], ["3", "4"], ["5"], ["6"]], walked


def test_a_page_provider_that_keeps_its_own_page_size_loses_no_record(tmp_path, httpx_mock):
    """Pages of 4 whatever pageSize says: served 3 at a time, then on in its own numbering."""
    ids = [str(n) for n in range(1, 11)]

    def pages(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        return httpx.Response(200, json={"items": [{"id": i, "name": i} for i in ids[(number - 1) * 4:number * 4]]})

    httpx_mock.add_callback(pages, is_reusable=True)
    with gateway_for(tmp_path, "page", "{page: page.number, pageSize: page.limit}") as client:
        walked = walk(client, [3] * 8)
    assert sum(walked, []) == ids, walked
    assert all(len(page) <= 3 for page in walked)


@pytest.mark.parametrize("seed", range(12))
def test_a_declared_page_size_serves_every_record_once_whatever_the_limits(tmp_path, httpx_mock, seed):
    """A provider of pages of 7 whatever it is asked (paging.page_size: 7): the limits
    that once lost records (7 then 5: the provider's page 2 is records 8-14, not 6-10)
    and any others."""
    ids = [str(n) for n in range(1, 38)]

    def pages(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        return httpx.Response(200, json={"items": [{"id": i, "name": i} for i in ids[(number - 1) * 7:number * 7]]})

    httpx_mock.add_callback(pages, is_reusable=True)
    rng = random.Random(seed)
    limits = [7, 5, 7, 7, 1] if seed == 0 else [rng.randint(1, 12) for _ in range(80)]
    with gateway_for(tmp_path, "page", "{page: page.number, pageSize: page.limit}", page_size=7) as client:
        walked = walk(client, limits + [12] * 40)
    assert sum(walked, []) == ids, walked
    assert all(len(page) <= limit for page, limit in zip(walked, limits + [12] * 40))
    asked = {r.url.params["pageSize"] for r in httpx_mock.get_requests()}
    assert asked == {"7"}, "the provider is asked for its own page size"


def test_a_more_flag_is_for_offsets_and_page_numbers_only(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "paged.yaml").write_text(
        PAGED.replace("STYLE", "token").replace("QUERY", "{after: page.token}").replace("NEXT", "next")
        .replace("MAX", "100").replace("SIZE", "null").replace("max_limit: 100,", "max_limit: 100, more: has_more,"))
    with pytest.raises(MappingError) as caught:
        load_dir(tmp_path / "m")
    assert "paging.more: offset and page styles only, not token" in str(caught.value)


def test_a_page_size_is_for_page_numbers_only(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "paged.yaml").write_text(
        PAGED.replace("STYLE", "offset").replace("QUERY", "{offset: page.offset}").replace("NEXT", "null")
        .replace("MAX", "100").replace("SIZE", "7"))
    with pytest.raises(MappingError) as caught:
        load_dir(tmp_path / "m")
    assert "paging.page_size" in str(caught.value) and "style page only" in str(caught.value)
