"""Test infrastructure: real servers and peers on 127.0.0.1 (Kamailio, redis, baresip, sipp).

Nothing here imports webphone: fixtures must keep working while the library is broken.
"""
