"""A workspace's upload settings: who may read and change them, what members see as limits,
and the ``echora workspace-settings`` command on the same rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from support.people import People

from echora_server.cli import main
from echora_server.files.policy import TYPE_GROUPS

KiB = 1024
SERVER_MAX = 512 * KiB


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": SERVER_MAX}


async def test_owner_and_admin_change_settings_members_may_not(
    client: TestClient, people: People
) -> None:
    olive = await people.create("olive")  # the first member: owner
    adam = await people.create("adam", role="admin")
    mia = await people.create("mia")
    path = f"/api/workspaces/{olive.workspace_id}/settings"

    shown = await (await olive.get(path)).json()
    assert shown["max_file_size"] is None and shown["tickets"] is True
    assert shown["server_max_file_size"] == SERVER_MAX
    assert set(shown["type_groups"]) == set(TYPE_GROUPS)

    changed = await adam.request(
        "PATCH", path, json={"max_file_size": 100 * KiB, "denied_types": ["archives"]}
    )
    assert changed.status == 200, await changed.text()
    second = await olive.request("PATCH", path, json={"member_quota": 5 * KiB})
    body = await second.json()
    # Only what was sent changed: the admin's change stands beside the owner's.
    assert (body["max_file_size"], body["denied_types"], body["member_quota"]) == (
        100 * KiB,
        ["archives"],
        5 * KiB,
    )

    for attempt in (mia.get(path), mia.request("PATCH", path, json={"member_quota": None})):
        response = await attempt
        assert response.status == 403, await response.text()
        assert (await response.json())["error"]["code"] == "forbidden"
    assert (await (await olive.get(path)).json())["member_quota"] == 5 * KiB


async def test_outsiders_get_404_and_limits_are_for_members(
    client: TestClient, people: People
) -> None:
    olive = await people.create("olive")
    mia = await people.create("mia")
    zed = await people.create("zed", workspace="globex")
    base = f"/api/workspaces/{olive.workspace_id}"
    for response in (
        await zed.get(f"{base}/settings"),
        await zed.request("PATCH", f"{base}/settings", json={"tickets": False}),
        await zed.get(f"{base}/limits"),
        await zed.get("/api/workspaces/999999/limits"),
    ):
        assert response.status == 404
        assert (await response.json())["error"] == {
            "code": "not_found",
            "message": "Workspace not found.",
        }

    await olive.request(
        "PATCH",
        f"{base}/settings",
        json={"allowed_types": ["images", "application/pdf"], "storage_quota": 10 * KiB},
    )
    limits = await mia.get(f"{base}/limits")
    body = await limits.json()
    assert limits.status == 200, body
    assert body["max_file_size"] == SERVER_MAX
    assert set(body["allowed_types"]) == TYPE_GROUPS["images"] | {"application/pdf"}
    assert body["workspace"] == {
        "bytes_stored": 0,
        "bytes_reserved": 0,
        "bytes_used": 0,
        "bytes_allowed": 10 * KiB,
    }
    assert body["mine"]["quota"] == "member" and body["mine"]["bytes_allowed"] is None


async def test_refused_changes(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    path = f"/api/workspaces/{olive.workspace_id}/settings"
    above = await olive.request("PATCH", path, json={"max_file_size": SERVER_MAX + 1})
    assert above.status == 409
    assert (await above.json())["error"]["details"] == {"limit_bytes": SERVER_MAX}
    for bad in (
        {"allowed_types": ["pictures"]},
        {"tickets": None},
        {"storage_quota": -1},
        {"colour": "red"},
    ):
        response = await olive.request("PATCH", path, json=bad)
        assert response.status == 422, (bad, await response.text())
    assert (await (await olive.get(path)).json())["max_file_size"] is None


async def test_the_command_shows_and_sets(
    client: TestClient, people: People, database_url: str, tmp_path: Path
) -> None:
    olive = await people.create("olive")
    env = {
        "ECHORA_DATABASE_URL": database_url,
        "ECHORA_DATA_DIR": str(tmp_path),
        "ECHORA_MAX_UPLOAD_BYTES": str(SERVER_MAX),
    }
    runner = CliRunner()

    async def echora(*args: str) -> Any:  # asyncio.run needs a thread without a loop
        return await asyncio.to_thread(runner.invoke, main, list(args), env=env)

    done = await echora(
        *[
            "workspace-settings",
            "acme",
            "--max-file-size",
            "2048",
            "--deny",
            "video,application/zip",
            "--no-direct",
            "--bot-quota",
            "4096",
        ]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["denied_types"] == ["video", "application/zip"]
    shown = await (await olive.get(f"/api/workspaces/{olive.workspace_id}/settings")).json()
    assert (shown["max_file_size"], shown["direct_uploads"], shown["bot_quota"]) == (
        2048,
        False,
        4096,
    )
    cleared = await echora("workspace-settings", "acme", "--bot-quota", "none")
    assert cleared.exit_code == 0 and json.loads(cleared.stdout)["bot_quota"] is None
    too_big = await echora("workspace-settings", "acme", "--max-file-size", str(SERVER_MAX + 1))
    assert too_big.exit_code != 0 and "server's limit" in too_big.output
    missing = await echora("workspace-settings", "nowhere")
    assert missing.exit_code != 0 and "no workspace" in missing.output
