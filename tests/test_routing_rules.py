"""Routing rules from the config and from admins, through intake and the command line."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import select

from bot import intake
from service.assembly import open_core
from contract.messages import Inbound
from storage.models import Complaint, Event

ROUTED = {
    "units": [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận"}, {"slug": "dien-luc", "name": "Điện lực"},
              {"slug": "cau-giay", "name": "UBND quận Cầu Giấy"}],
    "routing": {"default_unit": "tiep-nhan", "rules": [
        {"unit": "dien-luc", "keywords": ["mất điện", "chập điện"]},
        {"unit": "cau-giay", "areas": ["Cầu Giấy"]},
    ]},
}


async def test_intake_routes_by_config_rules_and_records_why(make_config, clock):
    core = await open_core(make_config(ROUTED), clock=clock)
    try:
        for i, (text, area) in enumerate([("Khu toi MAT DIEN tu sang", None), ("Ổ gà lớn", "phường Dịch Vọng, cau giay"),
                                          ("Góp ý thái độ cán bộ", None)]):
            await intake.receive(core, Inbound(channel="sms", external_id=f"S{i}", sender=f"+849123400{i:02d}",
                                               text=text, area=area, received_at=clock.now()))
        async with core.sessions() as session:
            units = (await session.scalars(select(Complaint.unit_id).order_by(Complaint.id))).all()
            reasons = (await session.scalars(select(Event.detail).where(Event.kind == "routed")
                                             .order_by(Event.id))).all()
        assert units == [core.directory.unit_ids["dien-luc"], core.directory.unit_ids["cau-giay"], core.directory.unit_ids["tiep-nhan"]]
        assert [r["reason"] for r in reasons] == ["config rule 1: keyword 'mất điện'",
                                                 "config rule 2: area 'Cầu Giấy'",
                                                 "default unit (no rule matched)"]
    finally:
        await core.close()


def write_config(tmp_path, database_url: str) -> str:
    path = tmp_path / "routing.toml"
    path.write_text(f'''
[storage]
url = "{database_url}"
[[units]]
slug = "tiep-nhan"
name = "Bộ phận tiếp nhận"
[[units]]
slug = "dien-luc"
name = "Điện lực"
[[units]]
slug = "moi-truong"
name = "Phòng Tài nguyên và Môi trường"
[[routing.rules]]
unit = "dien-luc"
keywords = ["mất điện"]
''', encoding="utf-8")
    return str(path)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=60)


def test_route_test_and_admin_rules_from_the_command_line(tmp_path, database_url):
    config = write_config(tmp_path, database_url)
    shown = cli("route-test", "Khu tôi mất  điện", "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["unit:    dien-luc (Điện lực)", "reason:  config rule 1: keyword 'mất điện'",
                                         "urgency: normal"]

    assert "default unit" in cli("route-test", "rác thải ở chợ", "--config", config).stdout
    added = cli("rules", "add", "--unit", "moi-truong", "--keyword", "rác thải,ô nhiễm", "--config", config)
    assert added.returncode == 0 and added.stdout.startswith("added rule "), added.stderr
    rule_id = added.stdout.split()[-1]
    shown = cli("route-test", "rac thai o cho", "--config", config)
    assert shown.stdout.splitlines() == ["unit:    moi-truong (Phòng Tài nguyên và Môi trường)",
                                         f"reason:  db rule {rule_id}: keyword 'rác thải'", "urgency: normal"]
    listing = cli("rules", "list", "--config", config).stdout
    assert "config rule 1" in listing and f"db rule {rule_id}" in listing

    refused = cli("rules", "remove", "999", "--config", config)
    assert refused.returncode == 1 and "no admin rule 999" in refused.stderr
    assert cli("rules", "add", "--unit", "nowhere", "--keyword", "x", "--config", config).returncode == 1
    assert cli("rules", "add", "--unit", "moi-truong", "--config", config).returncode == 1
    assert cli("rules", "remove", rule_id, "--config", config).returncode == 0
    assert "default unit" in cli("route-test", "rac thai o cho", "--config", config).stdout
