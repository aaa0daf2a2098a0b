"""Credentials a channel renews itself: one renewal across processes, the new value kept."""

from __future__ import annotations

import asyncio

from bot import credentials
from service.assembly import open_core


async def test_a_stored_credential_is_read_back(core):
    assert await credentials.read(core, "zalo") is None
    await credentials.store(core, "zalo", {"access_token": "A1", "refresh_token": "R1"})
    assert await credentials.read(core, "zalo") == {"access_token": "A1", "refresh_token": "R1"}


async def test_two_processes_finding_a_token_stale_renew_it_once(make_config, clock):
    """Two cores (each its own engine, as two processes) race to renew the same stale pair."""
    config = make_config()
    cores = [await open_core(config, clock=clock) for _ in range(2)]
    try:
        stale = {"access_token": "A1", "refresh_token": "R1"}
        await credentials.store(cores[0], "zalo", stale)
        spent: list[str] = []

        async def renewal(current: dict) -> dict:
            spent.append(current["refresh_token"])  # a refresh token works once: spending it twice is the bug
            await asyncio.sleep(0.2)  # the provider takes its time; the other process must wait
            number = len(spent) + 1
            return {"access_token": f"A{number}", "refresh_token": f"R{number}"}

        results = await asyncio.gather(*(credentials.renew(core, "zalo", stale, renewal) for core in cores))
        assert spent == ["R1"]
        assert results[0] == results[1] == {"access_token": "A2", "refresh_token": "R2"}
        assert await credentials.read(cores[1], "zalo") == {"access_token": "A2", "refresh_token": "R2"}
    finally:
        for core in cores:
            await core.close()


async def test_a_failed_renewal_keeps_the_stored_pair(core):
    await credentials.store(core, "zalo", {"access_token": "A1", "refresh_token": "R1"})

    async def refused(current: dict) -> dict:
        raise RuntimeError("refresh token rejected")

    try:
        await credentials.renew(core, "zalo", {"access_token": "A1", "refresh_token": "R1"}, refused)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the renewal's failure must reach the caller")
    assert await credentials.read(core, "zalo") == {"access_token": "A1", "refresh_token": "R1"}
