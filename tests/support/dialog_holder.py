"""A process that holds one SIP dialog and nothing else, to be SIGKILLed by a test.

    python -m support.dialog_holder SIPINFO_JSON INSTANCE NUMBER

Registers (SipClient with the RFC 5626 `INSTANCE`), calls `NUMBER` with a placeholder SDP, ACKs
the 200, prints one JSON line with its side of the dialog (`call_id`, `local`, `remote`,
`target`, `route`, `cseq`), then waits to be killed. The test's successor carries on from that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

from support.sandbox_server import FAKE_SDP, DialogView, ScriptedPhone


async def main(info: dict[str, object], instance: str, number: str) -> None:
    phone = await ScriptedPhone(info, instance).start()
    answer = await phone.client.request(phone.invite(number, body=FAKE_SDP))
    if answer.status_code != 200:
        raise SystemExit(f"the call failed: {answer.status_code} {answer.reason}")
    sent = next(m for d, m in reversed(phone.trace) if d == "out"
                and getattr(m, "method", None) == "INVITE")
    await phone.client.send(phone.ack(sent, answer))  # type: ignore[arg-type]
    dialog = DialogView.as_caller(sent, answer)  # type: ignore[arg-type]
    print(json.dumps({**dataclasses.asdict(dialog), "cseq": sent.cseq.number}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]))
