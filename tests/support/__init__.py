"""Test infrastructure: real servers and peers on 127.0.0.1 (Kamailio, redis, baresip, sipp).

Nothing here imports webphone: fixtures must keep working while the library is broken.
Import as `support.<module>` (tests/ is on sys.path through tests/conftest.py).

Fixtures (tests/conftest.py); a missing binary skips, or FAILS when CI=true:

- `kamailio` (session): `support.kamailio.Kamailio`, started. `.sip_port`, `.ws_port`,
  `.ws_url` ("ws://127.0.0.1:PORT"), `.outbound_proxy` ("127.0.0.1:PORT"), `.sip_uri_host`
  ("127.0.0.1:SIP_PORT", UDP/TCP), `.domain` ("sip.test"), `.ctl_sock` ("unix:/..."),
  `.ctl_path`, `.log_path`, `.users` / `.password(user)`, `.sip_info(user, **overrides)`,
  `.bindings(user)`, `await .wait_bindings(user, n, timeout)`, `.clear_bindings(user)`,
  `.kamcmd(*args)`, `.dump()`, `.log_tail()`.
- `fresh_user` (function): callable -> next of "101".."110" (password "pw101"...), bindings
  cleared.
- `kamailio_proc` (function): factory -> a separate, started Kamailio (`start=False` to not
  start it) with `.stop()`, `.start()` (same ports), `.restart()`, `.pause()` (SIGSTOP of all
  its processes), `.resume()`, `await .astart()`, `await .astop()`, plus everything above.
- `redis_server` (function): `support.redis_server.RedisServer`, started: `.url`, `.host`,
  `.port`, `.ping()`, `.stop()`, `.start()` (same port, empty), `.restart()`, `.pause()`,
  `.resume()`, `await .astart()`, `await .astop()`.
- `baresip` (function, async factory): `bob = await baresip("bob", ice=False,
  answermode="manual", register=True, kam=None)` -> `support.baresip.Baresip`.
- `sipp` (function): `sipp("invite_404.xml", "nobody")` / `await sipp.arun(...)` ->
  `support.sipp.SippResult`.

Helpers: `support.wait` (wait_until, wait_until_sync, wait_tcp, wait_tcp_async),
`support.ports` (free_tcp_port, free_udp_port, free_sip_port, free_udp_range),
`support.procs.ManagedProcess`.
"""
