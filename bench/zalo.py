"""Benchmark: Zalo OA webhook intake under wrk, signed events, against a bare aiohttp handler.

Not a test. It measures, in one run on this machine, two servers under the same load:

* service: ``feedback-intake serve`` with Zalo on (its first token pair stored with
  ``feedback-intake zalo set-token``), on a temporary SQLite file (``--postgres``: a
  PostgreSQL database made and dropped). Each request is ``POST /webhooks/zalo``, a
  ``user_send_text`` event shaped like tests/fixtures/zalo/ from a Zalo user never seen before
  in the run (so each one is a new citizen and a new complaint), signed in
  X-ZEvent-Signature as Zalo does (SHA-256 of app_id + body + timestamp + OA secret key).
  The service verifies it, greets the new citizen, files the complaint, queues the
  acknowledgement and answers 200; its dispatcher sends greetings and acknowledgements as
  consultation messages to a fake Zalo OA API served by this benchmark's process.
* bare: ``python bench/common.py --bare-server PORT``, an aiohttp app that parses the same
  JSON (``await request.json()``) and answers 200.

wrk (``-t1 -c32``) replays pre-generated requests, each once; see bench/README.md.

    python bench/zalo.py                 # SQLite, 2 s warm-up + 10 s measured each
    python bench/zalo.py --postgres --check
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path

from common import (Channel, FakeHttp, Tally, add_wrk_arguments, between, mismatches, raw_request, run_main,
                    service_command, service_config, store_query, toml_str)
from desk import seed_store

APP_ID = "4318726409871532817"
OA_ID = "1180429937510628413"
OA_SECRET = "bench-zalo-oa-secret-" + "7" * 8
APP_SECRET = "bench-zalo-app-secret-" + "3" * 8
TEXTS = (
    "Đèn đường ngõ 12 phố Trần Duy Hưng hỏng ba hôm nay, buổi tối rất tối và nguy hiểm.",
    "Rác thải ở đầu ngõ 45 Nguyễn Chí Thanh không được thu gom từ thứ Hai, bốc mùi rất khó chịu.",
    "Nắp cống trước số nhà 88 đường Láng bị vỡ, xe máy đi qua rất dễ sụp bánh.",
    "Nhà hàng xóm hát karaoke đến 1 giờ sáng nhiều đêm liền, ảnh hưởng giấc ngủ của cả khu tập thể.",
    "Water has been cut off in our building for two days without notice.",
)


class Zalo(Channel):
    prefix = "zalo"
    title = "Zalo webhook benchmark"
    guess = 200.0

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.users = itertools.count(10 ** 18 + self.rng.randrange(10 ** 12) * 10 ** 6)
        self.fake: FakeHttp | None = None

    async def start(self, args, workdir, url, port) -> Path:
        from aiohttp import web

        async def cs(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response({"error": 0, "message": "Success", "data": {
                "message_id": secrets.token_hex(10), "user_id": body["recipient"]["user_id"]}})

        self.fake = FakeHttp([("POST", "/v3.0/oa/message/cs", cs)])
        await self.fake.start()
        fake = f"http://127.0.0.1:{self.fake.port}"
        os.environ["FI_BENCH_ZALO_OA_SECRET"] = OA_SECRET  # the service process inherits them
        os.environ["FI_BENCH_ZALO_APP_SECRET"] = APP_SECRET
        config = workdir / "config.toml"
        config.write_text(
            service_config(url, port, args.pool_size)
            + f"\n[zalo]\nenabled = true\napp_id = {toml_str(APP_ID)}\noa_id = {toml_str(OA_ID)}\n"
            + 'oa_secret_env = "FI_BENCH_ZALO_OA_SECRET"\napp_secret_env = "FI_BENCH_ZALO_APP_SECRET"\n'
            + f"api_base_url = {toml_str(fake)}\noauth_base_url = {toml_str(fake)}\nzns_base_url = {toml_str(fake)}\n",
            encoding="utf-8")
        setup = await asyncio.create_subprocess_exec(
            *service_command(), "zalo", "set-token", "--access-token", "bench-access", "--refresh-token",
            "bench-refresh", "--expires-in", "90000", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await setup.communicate()
        if setup.returncode != 0:
            raise RuntimeError(f"zalo set-token failed: {err.decode()[-300:]}")
        return config

    def requests(self, n: int, port: int) -> list[bytes]:
        out = []
        timestamp = str(int(time.time() * 1000))
        for _ in range(n):
            user = str(next(self.users))
            event = {"app_id": APP_ID, "sender": {"id": user}, "user_id_by_app": str(int(user) + 7),
                     "recipient": {"id": OA_ID}, "event_name": "user_send_text",
                     "message": {"text": self.rng.choice(TEXTS), "msg_id": secrets.token_hex(10)},
                     "timestamp": timestamp}
            body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
            mac = hashlib.sha256(APP_ID.encode() + body + timestamp.encode() + OA_SECRET.encode()).hexdigest()
            out.append(raw_request("POST", "/webhooks/zalo", port,
                                   {"Content-Type": "application/json", "X-ZEvent-Signature": f"mac={mac}"}, body))
        return out

    async def verify(self, url: str, floors: dict[str, int], tally: Tally) -> list[str]:
        sql = {
            "messages": "SELECT count(*) FROM messages WHERE channel = 'zalo' AND direction = 'in' AND id > {floor}",
            "distinct": "SELECT count(DISTINCT external_id) FROM messages WHERE channel = 'zalo' "
                        "AND direction = 'in' AND id > {floor}",
            "complaints": "SELECT count(*) FROM complaints WHERE channel = 'zalo' AND id > {complaint_floor}",
            "citizens": "SELECT count(DISTINCT sender) FROM messages WHERE channel = 'zalo' AND direction = 'in' "
                        "AND id > {floor}",
            "greetings": "SELECT count(*) FROM outbox WHERE key LIKE 'zalo-greeting:%' AND id > {outbox_floor}",
            "sent_greetings": "SELECT count(*) FROM outbox WHERE key LIKE 'zalo-greeting:%' AND status = 'sent' "
                              "AND id > {outbox_floor}",
            "acks": "SELECT count(*) FROM outbox WHERE key LIKE 'ack:%' AND complaint_id > {complaint_floor}",
            "sent_acks": "SELECT count(*) FROM outbox WHERE key LIKE 'ack:%' AND status = 'sent' "
                         "AND complaint_id > {complaint_floor}",
        }
        found = await store_query(url, {k: v.format(**floors) for k, v in sql.items()})
        if found is None:
            return ["the store has no tables"]
        print(f"  store: {found['messages']} Zalo messages ({found['distinct']} distinct msg_ids) from "
              f"{found['citizens']} citizens, {found['complaints']} complaints (answered 200: {tally.ok_total}, sent: "
              f"{tally.sent_total}), {found['acks']} acknowledgements ({found['sent_acks']} sent), "
              f"{found['greetings']} greetings ({found['sent_greetings']} sent); {self.fake.calls} calls reached the "
              "fake Zalo")
        return between(found, "complaints", tally, "complaints") + mismatches(found, (
            ("messages", found["complaints"]), ("distinct", found["messages"]),
                           ("citizens", found["messages"]), ("greetings", found["citizens"]),
                           ("sent_greetings", found["greetings"]), ("acks", found["complaints"]),
                           ("sent_acks", found["acks"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_wrk_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(Zalo(args.seed), args, seed_store)


if __name__ == "__main__":
    sys.exit(main())
