"""Fixtures of the real-browser tests: each module runs in JupyterLab and in Notebook 7.

A test module names its notebooks in ``NOTEBOOKS`` (file name -> cell sources); ``jupyter`` starts one
server per front end per module over a folder holding them, its kernels talking to the loopback
DashScope server with the tests' key and a run log of their own. When Chromium, Playwright or the
front end is missing, every test skips with the command that installs it, and fails under ``CI=true``
(tests/parts.py; tests/conftest.py checks before any fixture runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import FAKE_KEY
from parts import browser_missing, require

from .lab import FRONT_ENDS, FrontEnd, JupyterServer, chromium_context, write_notebook


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is marked ``browser``."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """Playwright's sync API, for one module: it runs an event loop of its own while it is open."""
    require("this browser test", browser_missing())
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module", params=FRONT_ENDS, ids=lambda front_end: front_end.name)
def front_end(request: pytest.FixtureRequest) -> FrontEnd:
    """JupyterLab, then Notebook 7: pytest runs all of a module's tests in one before the other."""
    require("this browser test", browser_missing(request.param.module))
    return request.param


@pytest.fixture(scope="module")
def jupyter(request: pytest.FixtureRequest, front_end: FrontEnd, server: Any,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """The module's notebooks served by ``front_end``; after the module, no kernel of it is left running."""
    tmp = tmp_path_factory.mktemp(f"{request.module.__name__.rpartition('.')[2]}-{front_end.name}")
    root = tmp / "root"
    root.mkdir()
    for name, cells in request.module.NOTEBOOKS.items():
        write_notebook(root / name, cells)
    env = {"QWEN_MAGICS_DASHSCOPE_URL": server.url, "DASHSCOPE_API_KEY": FAKE_KEY,
           "QWEN_MAGICS_LOG": str(tmp / "runlog.db")}
    with JupyterServer(root, front_end, env=env, state_dir=tmp / "state") as jupyter_server:
        yield jupyter_server
    assert jupyter_server.leftover_kernels == [], jupyter_server.log()


@pytest.fixture(scope="module")
def browser(playwright: Any, jupyter: JupyterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium context with a fresh profile, one per front end per module (closed before its server stops)."""
    context = chromium_context(playwright, tmp_path_factory.mktemp("chromium-profile"))
    yield context
    context.close()
