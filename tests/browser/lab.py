"""Drive a real JupyterLab 4 in Debian's headless Chromium, for tests that must see what a user sees.

Why each piece is here:
- ``JupyterLab`` runs the server as a subprocess on a free loopback port with a random token and its own
  config/runtime/settings dirs, so a test never depends on (or writes to) the user's Jupyter state, and
  the network-bound extras (news feed, update check, PyPI extension manager) are off: this machine only
  reaches package registries. ``env`` reaches the kernels, which inherit the server's environment.
- ``chromium_context`` uses /usr/bin/chromium because ``playwright install`` cannot download a browser
  here, with the flags that keep Chromium from calling out, in a fresh user-data-dir.
- ``open_notebook`` / ``run_all`` wait on DOM state (kernel status attribute, prompts) and never sleep.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
# Kernel idle, as two widgets say it. The toolbar indicator alone reads "idle" for a moment before a
# kernel exists (seen: idle -> initializing -> connecting -> unknown -> idle), so the kernel must also
# have a name and the status bar must read "<kernel> | Idle", which it only does once the kernel answered.
KERNEL_IDLE_JS = """() => {
    const panel = document.querySelector('%s');
    const status = panel?.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
    const name = panel?.querySelector('.jp-Toolbar-kernelName')?.getAttribute('aria-label');
    const bar = [...document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem')]
        .some(e => / [|] Idle$/.test(e.textContent));
    return status === 'idle' && !!name && name !== 'No Kernel' && bar;
}""" % PANEL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterLab:
    """A JupyterLab server for one test: ``with JupyterLab(root) as lab: page.goto(lab.url("a.ipynb"))``."""

    def __init__(self, root_dir: str | Path, env: Mapping[str, str] | None = None,
                 startup_timeout: float = 60.0, state_dir: str | Path | None = None) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self._env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._own_state = state_dir is None  # a temp dir of our own is removed by stop()
        self._state = Path(state_dir or tempfile.mkdtemp(prefix="jlab-state-"))
        self._state.mkdir(parents=True, exist_ok=True)
        self.leftover_kernels: list[str] = []
        self.log_path = self._state / "server.log"
        self.runtime_dir = self._state / "runtime"
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, relpath: str = "") -> str:
        """The Lab URL of a file under root_dir, token included (a browser gets its auth cookie from it)."""
        return f"{self.base}/lab/tree/{relpath}?token={self.token}"

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API (``/api/...``) and return the decoded JSON, or None if empty."""
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log(self) -> str:
        """The server's combined stdout/stderr so far, for failure messages."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start the server and wait until /api/status answers; raise with the log if it does not."""
        # Lab still asks "get notified about official Jupyter news?" with news_url=None: say Never.
        notification = self._state / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        # jupyter_server's default ws ping timeout (90 s) exceeds its interval (30 s): tornado warns per socket.
        server_config = self._state / "config/jupyter_server_config.json"
        server_config.parent.mkdir(exist_ok=True)
        server_config.write_text(json.dumps({"ServerApp": {"tornado_settings": {"ws_ping_timeout": 30000}}}))
        env = {**os.environ, **self._env,
               "JUPYTER_CONFIG_DIR": str(self._state / "config"),
               "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
               "JUPYTERLAB_SETTINGS_DIR": str(self._state / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(self._state / "workspaces")}
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
               "--ServerApp.allow_root=True",  # CI runs as root; harmless otherwise
               "--LabApp.news_url=None",  # no announcements feed, and the "news?" prompt is not shown
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]  # the "pypi" manager would query PyPI
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, cwd=self.root_dir, env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"jupyterlab exited with {self._proc.returncode}:\n{self.log()}")
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"jupyterlab did not answer in {self._startup_timeout}s:\n{self.log()}")

    def running_kernels(self) -> list[str]:
        """Connection files of kernels still alive: a kernel shut down cleanly removes its own."""
        return sorted(p.name for p in self.runtime_dir.glob("kernel-*.json"))

    def stop(self) -> None:
        """Shut kernels down through the API (so none is orphaned), then terminate, then kill.
        Afterwards ``leftover_kernels`` lists any kernel whose connection file survived."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                for kernel in self.api("GET", "/api/kernels"):
                    self.api("DELETE", f"/api/kernels/{kernel['id']}")
            except OSError:
                pass  # the server is already going away; terminate() makes it stop its kernels
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        self.leftover_kernels = self.running_kernels()
        if self._own_state:
            shutil.rmtree(self._state, ignore_errors=True)

    def __enter__(self) -> JupyterLab:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_notebook(path: str | Path, sources: Sequence[str]) -> Path:
    """Write a notebook of code cells with the python3 kernelspec set (else Lab asks which kernel)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, str(path))
    return Path(path)


def chromium_context(playwright: Any, user_data_dir: str | Path) -> Any:
    """A BrowserContext of Debian's headless Chromium with a fresh profile in ``user_data_dir``."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900})


def open_notebook(context: Any, lab: JupyterLab, relpath: str, timeout: float = 60_000) -> Any:
    """Open a notebook in Lab and wait until its cells are shown and its kernel reports idle."""
    page = context.new_page()
    page.goto(lab.url(relpath))
    page.wait_for_selector(f"{PANEL} .jp-Notebook .jp-Cell", timeout=timeout)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout)
    return page


def menu(page: Any, title: str, command: str) -> None:
    """Pick a main-menu item the way a user does; ``command`` is the item's Lumino command id."""
    page.click(f'.lm-MenuBar-item:has-text("{title}")')
    page.click(f'.lm-Menu-item[data-command="{command}"]')


def run_all(page: Any, timeout: float = 60_000, allow_errors: bool = False) -> list[str]:
    """Edit > Clear Outputs of All Cells, then Run > Run All Cells; wait until no prompt reads ``[*]:``
    and the kernel is idle; return the prompts. Clearing first makes every prompt ``[ ]:``, so a number
    in the first one proves this run started; queued cells all show ``[*]:`` at once, and a cell after
    an error is aborted back to ``[ ]:``. That, or a traceback in any output (an error output looks like
    stderr in the DOM), raises with the outputs unless ``allow_errors``."""
    page.click(f"{PANEL} .jp-Cell .jp-InputArea-editor")  # the menus act on the focused notebook
    menu(page, "Edit", "editmenu:clear-all")
    menu(page, "Run", "runmenu:run-all")
    prompts_js = f"[...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputPrompt')]" \
                 ".map(p => p.textContent.trim())"
    page.wait_for_function(f"""() => {{ const p = {prompts_js};
        return p.length > 0 && /^\\[\\d+\\]:$/.test(p[0]) && !p.includes('[*]:'); }}""", timeout=timeout)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout)
    prompts: list[str] = page.evaluate(f"() => {prompts_js}")
    outputs = page.locator(f"{PANEL} .jp-OutputArea-output").all_text_contents()
    if not allow_errors and ("[ ]:" in prompts or any("Traceback (most recent" in o for o in outputs)):
        raise RuntimeError(f"a cell failed: {prompts}; outputs:\n" + "\n".join(outputs))
    return prompts


def screenshot(page: Any, path: str | Path) -> Path:
    """Save a PNG of the whole page (what a person would see) and return its path."""
    page.screenshot(path=str(path), full_page=True)
    return Path(path)
