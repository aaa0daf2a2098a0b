"""Calls to Zalo's APIs with the OA's access token, and what their answers mean for the outbox.

Zalo answers HTTP 200 with an envelope whose ``error`` is 0 on success and a negative code
otherwise (developers.zalo.me, "Mã lỗi"); only ``error == 0`` is success. The access token
(about 25 hours) and its refresh token (three months, usable once) are kept in the store
as the credential ``zalo`` (``port.credential``): ``{"access_token", "refresh_token",
"expires_at"}``. A call answered "token invalid" (-216) or "expired or removed" (-220; ZNS:
-124) renews the pair through ``port.renew_credential`` (one renewal across processes,
the new pair saved in the same transaction) and is tried once more. A refresh is
``POST {oauth_base}/v4/oa/access_token`` with header ``secret_key`` (the app secret) and
the form ``refresh_token, app_id, grant_type=refresh_token``; a refused refresh comes as
HTTP 200 with ``error_name``/``error_description``, and the stored pair is then kept.
After a refresh the old access token stops working, so every process reads the stored
pair before each call rather than keeping one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timedelta

import aiohttp

from bot.clock import Clock
from bot.port import Port
from channels.zalo.config import ZaloConfig
from contract.delivery import PermanentDeliveryError, TransientDeliveryError, UnknownDeliveryError

log = logging.getLogger(__name__)

CREDENTIAL = "zalo"
# Refresh a little before the stored expiry, so a call never races the token's last second.
EXPIRY_MARGIN = timedelta(minutes=5)
TOKEN_ERRORS = {-216, -220, -124}  # invalid, expired or removed (OA API); invalid (ZNS)
RATE_LIMITED = -32
# How long a process keeps the token pair it read from the store before reading it again.
# Every message used to read it (a transaction each: two per Zalo complaint). A pair kept
# too long is harmless: when Zalo refuses its token, ``renew`` reads the store and takes
# the pair another process (or an operator) stored meanwhile.
PAIR_KEPT_SECONDS = 30.0


class NoToken(TransientDeliveryError):
    """No usable token: none was set, or Zalo refused the refresh (an operator must set one)."""


def _detail(answer: dict) -> str:
    text = answer.get("message") or answer.get("error_description") or answer.get("error_name") or ""
    return " ".join(str(text).split())[:200]


class ZaloApi:
    """The OA's API as the senders use it: authenticated calls, token renewal, Zalo's errors."""

    def __init__(self, port: Port, config: ZaloConfig, app_secret: str, clock: Clock):
        self.port = port
        self.config = config
        self.app_secret = app_secret
        self.clock = clock
        self.http: aiohttp.ClientSession | None = None  # opened and closed by the app's lifecycle
        self._pair: dict | None = None
        self._pair_until = 0.0

    async def _stored(self) -> dict | None:
        """The token pair: kept from the last read or renewal, else read from the store."""
        if self._pair is not None and time.monotonic() < self._pair_until:
            return self._pair
        return self._keep(await self.port.credential(CREDENTIAL))

    def _keep(self, pair: dict | None) -> dict | None:
        usable = bool(pair and pair.get("access_token"))  # no token yet: read again next time
        self._pair, self._pair_until = (pair, time.monotonic() + PAIR_KEPT_SECONDS) if usable else (None, 0.0)
        return pair

    async def call(self, url: str, body: dict) -> dict:
        """POST a JSON body with the access token; the answer's ``data`` on success.

        Raises PermanentDeliveryError with Zalo's code and message for an error Zalo gives,
        TransientDeliveryError for the network, HTTP errors and the rate limit.
        """
        data = await self._authorized(lambda token: self._post(url, body, token))
        return data if isinstance(data, dict) else {}

    async def read(self, url: str, query: dict) -> list:
        """GET a listing (``?data=`` a JSON object, as the OA API's reads take it) with the
        access token; the answer's ``data`` list on success. Errors as for ``call``; a read
        that gets no answer in time is transient (nothing was sent)."""
        data = await self._authorized(lambda token: self._get(url, query, token))
        return data if isinstance(data, list) else []

    async def _authorized(self, request) -> object:
        pair = await self._stored()
        if not pair or not pair.get("access_token"):
            raise NoToken("zalo: no access token stored; run `feedback-intake zalo set-token`")
        if self._expired(pair):
            pair = await self.renew(pair)
        answer = await request(pair["access_token"])
        if answer.get("error") in TOKEN_ERRORS:
            log.info("zalo token refused, renewing", extra={"fields": {"error": answer.get("error")}})
            pair = await self.renew(pair)
            answer = await request(pair["access_token"])
            if answer.get("error") in TOKEN_ERRORS:
                raise NoToken(f"zalo: the new access token is refused too ({answer.get('error')}): {_detail(answer)}")
        code = answer.get("error")
        if code == 0:
            return answer.get("data")
        if code == RATE_LIMITED:
            raise TransientDeliveryError(f"zalo: rate limited ({code}): {_detail(answer)}", 60.0)
        if not isinstance(code, int):
            raise TransientDeliveryError("zalo: an answer without an error code")
        raise PermanentDeliveryError(f"zalo: refused ({code}): {_detail(answer)}")

    def _expired(self, pair: dict) -> bool:
        expires_at = pair.get("expires_at")
        if not expires_at:
            return False
        try:
            return self.clock.now() >= datetime.fromisoformat(expires_at) - EXPIRY_MARGIN
        except ValueError:
            return False

    async def _post(self, url: str, body: dict, token: str) -> dict:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "access_token": token}
        return await self._answer("POST", url, headers, data=data)

    async def _get(self, url: str, query: dict, token: str) -> dict:
        params = {"data": json.dumps(query, separators=(",", ":"))}
        return await self._answer("GET", url, {"access_token": token}, params=params)

    async def _answer(self, method: str, url: str, headers: dict, **request: object) -> dict:
        if self.http is None:
            raise TransientDeliveryError("zalo: the channel is not started")
        try:
            async with self.http.request(method, url, headers=headers, **request) as response:
                if response.status != 200:
                    raise TransientDeliveryError(f"zalo: HTTP {response.status} from {url.split('/')[2]}",
                                                 _retry_after(response.headers.get("Retry-After")))
                answer = await response.json(content_type=None)
        except (asyncio.TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
            if method == "GET":
                raise TransientDeliveryError("zalo: no answer in time") from None
            # Zalo may have taken the message before the answer was lost: the next attempt
            # asks the conversation first (ZaloSender.lookup), then sends again if it is not there.
            raise UnknownDeliveryError("zalo: no answer in time") from None
        except aiohttp.ClientError as error:
            raise TransientDeliveryError(f"zalo: cannot reach Zalo: {type(error).__name__}") from None
        except ValueError:
            raise TransientDeliveryError("zalo: an answer that is not JSON") from None
        if not isinstance(answer, dict):
            raise TransientDeliveryError("zalo: an answer that is not a JSON object")
        return answer

    async def renew(self, stale: dict) -> dict:
        """A working pair: the one another process stored meanwhile, else a refreshed one."""
        return self._keep(await self.port.renew_credential(CREDENTIAL, stale, self._refresh))

    async def _refresh(self, current: dict) -> dict:
        """Spend the stored refresh token for a new pair (called under the credential's lock)."""
        if not current.get("refresh_token"):
            raise NoToken("zalo: no refresh token stored; run `feedback-intake zalo set-token`")
        if self.http is None:
            raise TransientDeliveryError("zalo: the channel is not started")
        form = {"refresh_token": current["refresh_token"], "app_id": self.config.app_id,
                "grant_type": "refresh_token"}
        url = f"{self.config.oauth_base_url}/v4/oa/access_token"
        try:
            async with self.http.post(url, data=form, headers={"secret_key": self.app_secret}) as response:
                if response.status != 200:
                    raise TransientDeliveryError(f"zalo: token refresh answered HTTP {response.status}")
                answer = await response.json(content_type=None)
        except asyncio.TimeoutError:
            raise TransientDeliveryError("zalo: no answer to the token refresh in time") from None
        except aiohttp.ClientError as error:
            raise TransientDeliveryError(f"zalo: cannot reach Zalo's OAuth: {type(error).__name__}") from None
        except ValueError:
            raise TransientDeliveryError("zalo: the token refresh answered something that is not JSON") from None
        if not isinstance(answer, dict) or not answer.get("access_token") or not answer.get("refresh_token"):
            error = answer.get("error") if isinstance(answer, dict) else None
            detail = _detail(answer) if isinstance(answer, dict) else ""
            log.error("zalo token refresh refused", extra={"fields": {"error": error, "detail": detail}})
            raise NoToken(f"zalo: token refresh refused ({error}): {detail}; "
                          "run `feedback-intake zalo set-token` with a new pair")
        log.info("zalo token refreshed")
        return token_pair(answer["access_token"], answer["refresh_token"], answer.get("expires_in"), self.clock.now())


def token_pair(access_token: str, refresh_token: str, expires_in: object, now: datetime) -> dict:
    """The stored form of a token pair; ``expires_in`` in seconds (Zalo sends it as a string)."""
    try:
        seconds = float(expires_in) if expires_in not in (None, "") else None
    except (TypeError, ValueError):
        seconds = None
    return {"access_token": access_token, "refresh_token": refresh_token,
            "expires_at": (now + timedelta(seconds=seconds)).isoformat() if seconds else None,
            "refreshed_at": now.isoformat()}


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
