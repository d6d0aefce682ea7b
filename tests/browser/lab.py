"""Drive a real Jupyter front end (JupyterLab 4 or Notebook 7) in Debian's headless Chromium, for tests
that must see what a user sees.

Why each piece is here:
- ``FrontEnd`` says how a front end is started and where it serves a notebook; both render cells with the
  same DOM (``.jp-Cell``, ``.jp-OutputArea``) and the same menus, so one test runs in either.
- ``JupyterServer`` runs the server as a subprocess on a free loopback port with a random token and its own
  config/runtime/settings/IPython dirs, so a test never depends on (or writes to) the user's Jupyter state,
  and the network-bound extras (news feed, update check, PyPI extension manager) are off: this machine only
  reaches package registries. ``env`` reaches the kernels, which inherit the server's environment.
- ``chromium_context`` uses /usr/bin/chromium because ``playwright install`` cannot download a browser
  here, with the flags that keep Chromium from calling out, in a fresh user-data-dir (and home).
- ``open_notebook`` / ``run_all`` wait on DOM state (kernel status attribute, prompts) and never sleep;
  ``page_errors`` is what the page reported as errors; ``set_slider`` types a value as a person does.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Lab's options: no announcements feed (and no "news?" prompt), no update check, and the "readonly"
# extension manager (the "pypi" one would query PyPI). Notebook 7 loads the same Lab server extension.
_QUIET_LAB = ("--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
              "--LabApp.extension_manager=readonly")


@dataclass(frozen=True)
class FrontEnd:
    """One Jupyter front end: the module that starts it and the URL path of a notebook under its root."""

    name: str
    module: str
    notebook_path: str


LAB = FrontEnd("lab", "jupyterlab", "/lab/tree/")
NOTEBOOK = FrontEnd("notebook", "notebook", "/notebooks/")
FRONT_ENDS = (LAB, NOTEBOOK)

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
# Errors a front end reports about itself on a notebook holding only ``1+1``: Notebook 7.6.5's shortcuts
# plugin reads the settings schema of a plugin it has not loaded (an unhandled rejection in notebook_core).
FRONT_END_NOISE = ("TypeError: Cannot read properties of undefined (reading 'schema')",)
# Before the page's own scripts: remember every status the toolbar's kernel indicator shows, and every
# error the page reports (console.error, uncaught exceptions), for ``page_errors``.
WATCH_PAGE_JS = """
window.__kernelStatuses = [];
window.__pageErrors = [];
const consoleError = console.error.bind(console);
console.error = (...args) => { window.__pageErrors.push(args.map(String).join(' ')); consoleError(...args); };
window.addEventListener('error', e => window.__pageErrors.push(String(e.message || e)));
window.addEventListener('unhandledrejection',
    e => window.__pageErrors.push(`unhandled: ${e.reason} ${e.reason?.stack || ''}`));
new MutationObserver(() => {
    const status = document.querySelector('%s .jp-Notebook-ExecutionIndicator')?.dataset.status;
    const seen = window.__kernelStatuses;
    if (status && seen[seen.length - 1] !== status) seen.push(status);
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
""" % PANEL
# Kernel idle, as a person reads it in the toolbar: the indicator says idle, a kernel is named, and the
# kernel has answered since the page connected. The indicator alone reads "idle" before a kernel exists
# (seen: idle -> initializing -> connecting -> unknown [-> busy] -> idle); it reads "unknown" once the
# socket is open and idle again only when the kernel's own status message arrives.
KERNEL_IDLE_JS = """() => {
    const panel = document.querySelector('%s');
    const status = panel?.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
    const name = panel?.querySelector('.jp-Toolbar-kernelName')?.textContent.trim();
    const seen = window.__kernelStatuses || [];
    const answered = seen.includes('unknown') || seen.includes('busy');
    return status === 'idle' && !!name && name !== 'No Kernel' && answered;
}""" % PANEL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterServer:
    """A server of one front end: ``with JupyterServer(root, LAB) as server: page.goto(server.url("a.ipynb"))``."""

    def __init__(self, root_dir: str | Path, front_end: FrontEnd = LAB, env: Mapping[str, str] | None = None,
                 startup_timeout: float = 60.0, state_dir: str | Path | None = None) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.front_end = front_end
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self._env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._own_state = state_dir is None  # a temp dir of our own is removed by stop()
        self._state = Path(state_dir or tempfile.mkdtemp(prefix="jupyter-state-"))
        self._state.mkdir(parents=True, exist_ok=True)
        self.leftover_kernels: list[str] = []
        self.log_path = self._state / "server.log"
        self.runtime_dir = self._state / "runtime"
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, relpath: str = "") -> str:
        """The front end's URL of a notebook under root_dir, token included (the browser's auth cookie)."""
        return f"{self.base}{self.front_end.notebook_path}{relpath}?token={self.token}"

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
               "JUPYTER_DATA_DIR": str(self._state / "data"),
               "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
               "JUPYTERLAB_SETTINGS_DIR": str(self._state / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(self._state / "workspaces"),
               "IPYTHONDIR": str(self._state / "ipython")}  # the kernels' history and profile
        cmd = [sys.executable, "-m", self.front_end.module, "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
               "--ServerApp.allow_root=True",  # CI runs as root; harmless otherwise
               *_QUIET_LAB]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, cwd=self.root_dir, env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.front_end.module} exited with {self._proc.returncode}:\n{self.log()}")
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.front_end.module} did not answer in {self._startup_timeout}s:\n{self.log()}")

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

    def __enter__(self) -> JupyterServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_notebook(path: str | Path, sources: Sequence[str]) -> Path:
    """Write a notebook of code cells with the python3 kernelspec set (else the front end asks which kernel)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, str(path))
    return Path(path)


def chromium_context(playwright: Any, user_data_dir: str | Path) -> Any:
    """A BrowserContext of Debian's headless Chromium with a fresh profile in ``user_data_dir``. Its home
    and XDG dirs are in there too: Chromium writes its crash-report settings and dconf cache under them."""
    home = Path(user_data_dir) / "home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env,
        viewport={"width": 1280, "height": 900})


def open_notebook(context: Any, server: JupyterServer, relpath: str, timeout: float = 60_000) -> Any:
    """Open a notebook and wait until its cells are shown and its kernel reports idle."""
    page = context.new_page()
    page.add_init_script(WATCH_PAGE_JS)
    page.goto(server.url(relpath))
    page.wait_for_selector(f"{PANEL} .jp-Notebook .jp-Cell", timeout=timeout)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout)
    return page


def page_errors(page: Any) -> list[str]:
    """What the page reported as errors since it opened (console.error, uncaught exceptions), less the
    front ends' own ``FRONT_END_NOISE``."""
    errors: list[str] = page.evaluate("() => window.__pageErrors")
    return [e for e in errors if not any(noise in e for noise in FRONT_END_NOISE)]


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


def set_slider(page: Any, slider: Any, value: str) -> None:
    """Type ``value`` into an ipywidgets slider's readout and press Enter, as a person sets an exact value."""
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def screenshot(page: Any, path: str | Path) -> Path:
    """Save a PNG of the whole page (what a person would see) and return its path."""
    page.screenshot(path=str(path), full_page=True)
    return Path(path)


# Every distinct text the answers under ``sel`` show while they stream (those starting with ``start``): proof the
# text arrived in pieces.  Read back with ``page.evaluate("window.__answers")``.
WATCH_ANSWERS = """([sel, start]) => {
    window.__answers = [];
    new MutationObserver(() => {
        for (const el of document.querySelectorAll(sel + ' .widget-html-content')) {
            const text = el.textContent;
            if (text.startsWith(start) && !window.__answers.includes(text)) window.__answers.push(text);
        }
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
# Whether at least ``n`` footers (a finished answer's "tok/s" line) show under ``sel``.
FOOTERS_JS = "([sel, n]) => [...document.querySelectorAll(sel + ' .widget-html-content')]" \
             ".filter(e => e.textContent.includes('tok/s')).length >= n"
