"""The officers' incident commands and buttons on Telegram: /merge, /split, /incident, and
Join / Keep separate under a suggestion; a part of ``StaffDesk`` (``staff.py``), which
authorises through the port like every staff action.
"""

from __future__ import annotations

from telegram import Message

from contract.results import Officer
from channels.telegram.common import edit, say, split_code


class IncidentDesk:
    """Incident commands and buttons; mixed into ``StaffDesk``, whose ``port``, ``_t``,
    ``_act`` and ``_bad_code`` it uses."""

    def _i(self, key: str, **params: object) -> str:
        return self.port.texts.get(self.port.config.service.default_language, f"incidents.{key}", **params)

    def _summary(self, incident) -> str:
        due = self.port.format_time(incident.first_response_due, self.port.config.service.default_language) \
            if incident.first_response_due else "-"
        return self._i("show", incident=incident.id, reports=len(incident.codes), lead=incident.lead_code, due=due,
                       codes=", ".join(incident.codes))

    async def _incident(self, message: Message, officer: Officer, name: str, rest: str) -> None:
        """/merge CODE CODE…, /split CODE, /incident CODE."""
        codes, left = [], rest
        while left.strip():
            code, after = split_code(self.port, left)
            if code is None:
                await self._bad_code(message, left.split()[0])
                return
            codes.append(code)
            left = after
        if name == "merge" and len(codes) < 2 or name != "merge" and len(codes) != 1:
            await say(message, self._i("usage_merge") if name == "merge" else self._i("usage_split")
                      if name == "split" else self._t("usage_code", command=name))
            return
        found: list = []

        async def answer(reply: str, failed: bool) -> None:
            await say(message, reply if failed else reply + (self._summary(found[0]) if found and found[0] else ""))

        async def run(call) -> None:
            found.append(await call())

        code = codes[0]
        if name == "merge":
            await self._act(answer, code, lambda: run(lambda: self.port.incident_merge(officer, codes)), "")
        elif name == "split":
            if await self._act(answer, code, lambda: run(lambda: self.port.incident_split(officer, code)),
                               self._i("split_done", code=code) + " ") and not found[0]:
                await say(message, self._i("split_ended", code=code))
        else:
            if await self._act(answer, code, lambda: run(lambda: self.port.incident_of(officer, code)), "") \
                    and not found[0]:
                await say(message, self._i("none", code=code))

    async def _suggestion(self, alert, message: Message | None, officer: Officer, action: str, code: str,
                          candidate: str | None) -> None:
        """Join / Keep separate pressed under a suggestion."""
        if candidate is None:
            await alert(self._t("button_expired"), True)
            return
        if action == "ijoin":
            found: list = []

            async def join() -> None:
                found.append(await self.port.incident_join(officer, code, candidate))

            if await self._act(alert, code, join, self._i("joined_done", code=code, incident="", reports="")) \
                    and message:
                await edit(message, self._i("joined_done", code=code, incident=found[0].id,
                                            reports=len(found[0].codes)))
        elif await self._act(alert, code, lambda: self.port.incident_keep(officer, code, candidate),
                             self._i("kept_separate", code=code)) and message:
            await edit(message, self._i("kept_separate", code=code))
