"""The Graph client against the contract server: the token kept until it nearly expires, paging, the
throttling answer with its Retry-After, size caps, and links that lead elsewhere refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from responder.ingest.graph_client import AppCredentials, GraphClient, GraphError, NotFound, Throttled
from tests.support.graph_contract import GraphContract, running_contract


class _Clock:
    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
async def graph(clock: _Clock) -> AsyncIterator[GraphContract]:
    contract = await running_contract(now=clock)
    try:
        yield contract
    finally:
        await contract.stop()


def _client(graph: GraphContract, clock: _Clock, secret: str | None = None, **options: int) -> GraphClient:
    credentials = AppCredentials(graph.tenant, graph.client_id, SecretStr(secret or graph.client_secret))
    return GraphClient(credentials, graph_url=graph.graph_url, login_url=graph.url, now=clock, **options)  # type: ignore[arg-type]


def _tokens(graph: GraphContract) -> int:
    return sum(1 for s in graph.requests if s.path.endswith("/token"))


async def test_one_token_serves_until_a_minute_before_it_expires(graph: GraphContract, clock: _Clock) -> None:
    alice = graph.add_user("alice@example.com")
    client = _client(graph, clock)
    try:
        for _ in range(3):
            await client.call("GET", f"/users/{alice}")
        assert _tokens(graph) == 1
        clock.ahead = timedelta(seconds=graph.token_lifetime_s - 30)
        await client.call("GET", f"/users/{alice}")
        assert _tokens(graph) == 2
    finally:
        await client.close()


async def test_every_page_is_read_and_the_delta_link_comes_with_the_last(graph: GraphContract, clock: _Clock) -> None:
    ids = {graph.add_user(f"user{n}@example.com") for n in range(5)}
    client = _client(graph, clock)
    try:
        pages = [page async for page in client.pages("/users/delta?$select=accountEnabled")]
    finally:
        await client.close()
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert {u["id"] for p in pages for u in p.items} == ids
    assert [p.delta_link is not None for p in pages] == [False, False, True]


async def test_a_429_is_raised_with_graphs_retry_after(graph: GraphContract, clock: _Clock) -> None:
    graph.fail(429, retry_after="7", path_contains="/users")
    client = _client(graph, clock)
    try:
        with pytest.raises(Throttled) as raised:
            await client.call("GET", "/users/x")
        assert raised.value.retry_after_s == 7.0
        with pytest.raises(NotFound):  # the next call goes through
            await client.call("GET", "/users/x")
    finally:
        await client.close()


async def test_a_refused_secret_is_an_auth_error_that_does_not_name_the_secret(
    graph: GraphContract, clock: _Clock
) -> None:
    client = _client(graph, clock, secret="a-wrong-secret-for-the-test")
    try:
        with pytest.raises(GraphError) as raised:
            await client.call("GET", "/users/x")
    finally:
        await client.close()
    assert raised.value.kind == "auth" and "invalid_client" in str(raised.value)
    assert "a-wrong-secret" not in str(raised.value)


async def test_an_answer_over_the_cap_is_refused(graph: GraphContract, clock: _Clock) -> None:
    for n in range(5):
        graph.add_user(f"user{n}@example.com")
    client = _client(graph, clock, max_response_bytes=64)
    try:
        with pytest.raises(GraphError) as raised:
            await client.call("GET", "/users/delta")
    finally:
        await client.close()
    assert raised.value.kind == "too_large"


async def test_a_link_off_the_graph_url_is_not_followed(graph: GraphContract, clock: _Clock) -> None:
    client = _client(graph, clock)
    try:
        with pytest.raises(GraphError, match="refusing to follow"):
            await client.call("GET", "http://169.254.169.254/metadata")
    finally:
        await client.close()
