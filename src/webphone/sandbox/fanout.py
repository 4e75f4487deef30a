"""Out-of-dialog non-INVITE requests (MESSAGE, OPTIONS, SUBSCRIBE, ...) to a user's devices."""

from __future__ import annotations

from webphone.sip import SipRequest, SipResponse

from .calls import Endpoint
from .connection import Connection, Sender, TxFailure
from .messages import answer_unanswered, forwarded, relayed

__all__ = ["Fanout"]


class Fanout:
    """A non-INVITE request to every device of a user; the first 2xx (or the best) goes back."""

    def __init__(
        self, proxy: Sender, source: Connection, request: SipRequest, endpoints: list[Endpoint]
    ) -> None:
        self.proxy, self.source, self.request = proxy, source, request
        self.endpoints = endpoints
        self.pending = len(endpoints)
        self.answered = False
        self.failures: list[SipResponse] = []
        self.unanswered: list[TxFailure] = []

    def start(self) -> None:
        for endpoint in self.endpoints:
            out = forwarded(self.request, endpoint.contact, self.proxy.via())
            self.proxy.send_request(endpoint.connection, out, on_response=self._response,
                                    on_failure=self._failure)

    def _response(self, response: SipResponse) -> None:
        if response.status_code < 200:
            return
        self.pending -= 1
        if 200 <= response.status_code < 300 and not self.answered:
            self.answered = True
            self._relay(response)
        elif response.status_code >= 300:
            self.failures.append(response)
            self._maybe_fail()

    def _failure(self, why: TxFailure) -> None:
        self.pending -= 1
        self.unanswered.append(why)
        self._maybe_fail()

    def _maybe_fail(self) -> None:
        if self.pending > 0 or self.answered:
            return
        self.answered = True
        if self.failures:
            self._relay(min(self.failures, key=lambda r: r.status_code))
        else:
            self.proxy.send(self.source, answer_unanswered(self.request, self.unanswered))

    def _relay(self, response: SipResponse) -> None:
        out = relayed(response, self.request)
        if out is not None:
            self.proxy.send(self.source, out)
