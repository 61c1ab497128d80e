"""What every browser test module uses: chromium pointed at the test's app, and the two
window sizes the client is checked at."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from support.browser import SIZES, Browsers, open_browsers


@pytest.fixture
async def browsers(client: TestClient) -> AsyncIterator[Browsers]:
    async with open_browsers(str(client.make_url("/"))) as opened:
        yield opened


@pytest.fixture(params=sorted(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)
