"""A registrar whose 200 to REGISTER carries an expiry that is no number, or 0: a scripted
SIP-over-WebSocket registrar on a real socket (neither Kamailio nor the sandbox writes such
answers). "1²" is a digit string to `str.isdigit()` but no number to `int()`: it raised a
ValueError out of `register()`; an expiry of 0 raised one from the refresh timer's arithmetic."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from webphone import RegistrationError, SipInfo
from webphone.sip import SipRequest, parse_message
from webphone.sip.build import response_to
from webphone.sip_client import SipClient


def registrar(expires: str) -> Callable[[ServerConnection], Any]:
    """Answers every REGISTER 200, listing its Contact with `;expires=<expires>`."""

    async def handle(ws: ServerConnection) -> None:
        async for frame in ws:
            request = parse_message(frame)
            if not isinstance(request, SipRequest):
                continue
            contact = [("Contact", f"{c};expires={expires}")
                       for c in request.headers.get_all("Contact")]
            await ws.send(str(response_to(request, 200, "OK", to_tag="r1", headers=contact)))

    return handle


@pytest.fixture
async def odd_registrar(request: pytest.FixtureRequest) -> AsyncIterator[SipInfo]:
    server = await serve(registrar(request.param), "127.0.0.1", 0,
                         subprotocols=["sip"])  # type: ignore[list-item]
    port = server.sockets[0].getsockname()[1]
    try:
        yield SipInfo.from_dict({"username": "101", "password": "pw", "authorizationId": "101",
                                 "domain": "sip.test", "outboundProxy": f"127.0.0.1:{port}",
                                 "transport": "WS"})
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("odd_registrar", ["1²"], indirect=True)
async def test_an_expiry_that_is_no_number_counts_as_what_we_asked(
    odd_registrar: SipInfo
) -> None:
    client = SipClient(odd_registrar, instance_id="odd", register_expires=60)
    try:
        await client.start()
        assert client.registered and await client.register() == 60
    finally:
        await client.dispose()


@pytest.mark.parametrize("odd_registrar", ["0"], indirect=True)
async def test_a_200_granting_0_seconds_is_a_registration_error(odd_registrar: SipInfo) -> None:
    client = SipClient(odd_registrar, instance_id="zero")
    try:
        with pytest.raises(RegistrationError, match="expires 0"):
            await client.start()
        assert not client.registered
    finally:
        await client.dispose()
