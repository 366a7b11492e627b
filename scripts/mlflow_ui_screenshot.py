"""Look at the MLflow UI as a researcher does: a screenshot of an experiment's runs table.

    python scripts/mlflow_ui_screenshot.py --out /tmp/ui            # a tiny real store
    python scripts/mlflow_ui_screenshot.py --out /tmp/ui --store mlflow.db --experiment baseline

Without ``--store`` it builds a SQLite store in a temporary directory by running dvc.yaml's
stage commands (``generate@x_plus_y`` and three ``augmentation`` cells of x_plus_y) at a tiny
configuration. ``--experiment`` names an MLflow experiment of the store: a stage family
(``baseline``, ``experiment``, a study such as ``augmentation``) or ``data``, ``report``; a
name the store lacks is refused in one line that lists those it has. It starts
``mlflow ui`` on the store and opens the experiment's page (the link
:func:`groklab.tracking.ui_url` gives) in headless Chromium, driven over the DevTools protocol
so that it waits until the runs table has settled. It writes ``<out>/mlflow_ui.png``, the
rendered DOM (``<out>/mlflow_ui.html``) and what the page shows (``<out>/mlflow_ui.json``):
each top-level run's name and whether the table cuts it short, and each column header with
whether it lies inside the visible part of the table. The last line printed is that JSON.

Needs Chromium (Debian: ``apt-get install chromium``; or set CHROMIUM to its path).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from localhost import mlflow_on_localhost, stop_group

ROOT = Path(__file__).resolve().parents[1]
CELLS = ("reversal", "negation", "combined30")
TINY = {"seeds": [0, 1], "data": {"p": 11, "train_fraction": 0.5},
        "model": {"width": 32, "heads": 2},
        "train": {"steps": 30, "batch_size": 32, "eval_every": 10}}
WIDTH, HEIGHT = 1600, 900
PAGE_TIMEOUT_S = 45
# Headless Chromium that reaches nothing but the page: no sync, updates or first-run work.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"]

# Runs the stage commands in one process: each would otherwise import torch and MLflow anew.
DRIVER = """
import json, runpy, sys
for argv in json.loads(sys.argv[1]):
    sys.argv = [argv[2], *argv[3:]]  # python -m <module> <args>
    try:
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
"""

# What the page shows, measured by the browser itself.
PAGE_REPORT = r"""
(() => {
  const grid = document.querySelector('.ag-root-wrapper');
  if (!grid) return null;
  const view = grid.getBoundingClientRect();
  const runs = [...document.querySelectorAll('[role=gridcell][col-id="attributes.`Run Name`"]')]
    .map(cell => {
      const link = cell.querySelector('a');
      if (!link) return null;
      const text = document.createRange();
      text.selectNodeContents(link);
      const box = cell.getBoundingClientRect();
      let cut = text.getBoundingClientRect().right > box.right - 1;
      for (let el = link; el && el !== cell; el = el.parentElement)
        cut = cut || el.scrollWidth > el.clientWidth + 1;
      return {name: link.innerText.trim(), truncated: cut};
    }).filter(Boolean);
  const columns = [...document.querySelectorAll('[role=columnheader][col-id]')]
    .filter(h => h.innerText.trim() && !h.classList.contains('ag-header-group-cell'))
    .map(h => {
      const r = h.getBoundingClientRect();
      const cut = [...h.querySelectorAll('*')].some(el => el.scrollWidth > el.clientWidth + 1
                                                         && el.innerText.trim());
      return {id: h.getAttribute('col-id'), text: h.innerText.trim(), left: Math.round(r.left),
              truncated: cut,
              visible: r.width > 0 && r.left >= view.left - 1 && r.right <= view.right + 1};
    }).sort((a, b) => a.left - b.left);
  const cells = {};
  for (const c of document.querySelectorAll('[role=gridcell][col-id^="metrics."]')) {
    const row = c.closest('[row-index]').getAttribute('row-index');
    (cells[row] = cells[row] || {})[c.getAttribute('col-id')] = c.innerText.trim();
  }
  return {title: document.title, heading: (document.querySelector('h2') || {}).innerText,
          runs, columns, metric_cells: Object.values(cells)};
})()
"""


def chromium() -> str | None:
    """The Chromium binary: CHROMIUM (None when that is not an executable), else the first
    of the usual names on PATH."""
    if env := os.environ.get("CHROMIUM"):
        return shutil.which(env)
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


def stage_commands(cells: tuple[str, ...] = CELLS) -> list[list[str]]:
    """dvc.yaml's commands for generate@x_plus_y and augmentation@x_plus_y-<cell>, with the
    cell named on the command line (under DVC the stage reads it from DVC_STAGE)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def command(stage: str, *names: str) -> list[str]:
        return [*stages[stage]["cmd"].split(), *names]

    return [command("generate", "x_plus_y"),
            *(command("augmentation", "augmentation", "x_plus_y", aug) for aug in cells)]


def build_store(workdir: Path) -> Path:
    """Run the stages at the tiny configuration in ``workdir``; returns its mlflow.db."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commands = stage_commands()
    if any(cmd[:2] != ["python", "-m"] for cmd in commands):
        raise RuntimeError(f"expected `python -m <module> ...` stage commands, got {commands}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(workdir), GROKLAB_THREADS="1", GROKLAB_TRACKING="on")
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands)], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the stages failed:\n{proc.stdout}{proc.stderr[-3000:]}")
    return workdir / "mlflow.db"


@contextlib.contextmanager
def mlflow_ui(store: Path, log: Path) -> Iterator[str]:
    """``mlflow ui`` on ``store`` at a free localhost port; yields its base URL."""
    with mlflow_on_localhost("ui", ["--backend-store-uri", f"sqlite:///{store.absolute()}"],
                             store.parent, log) as url:
        yield url


def rest(url: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    full = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        full += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


# Puts the pipe ends (argv 1, 2) on fds 3 and 4, where --remote-debugging-pipe expects them,
# then becomes the browser (argv 3...). Copies first: either end may already be fd 3 or 4.
FDS_3_4 = """
import os, sys
r, w = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2]))
os.dup2(r, 3)
os.dup2(w, 4)
os.execvp(sys.argv[3], sys.argv[3:])
"""


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the
    browser, one JSON message per NUL-terminated chunk): no websocket library needed."""

    def __init__(self, binary: str, profile: Path):
        self._to_browser = os.pipe()
        self._from_browser = os.pipe()
        r, w = self._to_browser[0], self._from_browser[1]
        cmd = [sys.executable, "-I", "-S", "-c", FDS_3_4, str(r), str(w), binary,
               *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
               "about:blank"]
        self.proc = subprocess.Popen(cmd, pass_fds=(r, w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(r)
        os.close(w)
        self._buffer, self._next_id = b"", 0

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        """One command; returns its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser[1], json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser[0]], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            chunk = os.read(self._from_browser[0], 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        stop_group(self.proc)
        for fd in (self._to_browser[1], self._from_browser[0]):
            with contextlib.suppress(OSError):
                os.close(fd)


def capture(binary: str, page: str, n_runs: int, out: Path) -> dict[str, Any]:
    """Open ``page`` in a fresh profile, wait until ``n_runs`` runs are listed and the table
    stops changing, then save the screenshot, the DOM and the page report."""
    with tempfile.TemporaryDirectory(prefix="groklab-chromium-") as profile:
        browser = Chromium(binary, Path(profile))
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target,
                                                             "flatten": True})["sessionId"]
            browser.send("Emulation.setDeviceMetricsOverride", {
                "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
                session)
            browser.send("Page.navigate", {"url": page}, session)
            report, previous = None, None
            deadline = time.monotonic() + PAGE_TIMEOUT_S
            while time.monotonic() < deadline:
                time.sleep(0.5)
                report = browser.send("Runtime.evaluate", {
                    "expression": PAGE_REPORT, "returnByValue": True}, session)["result"].get(
                    "value")
                if report and len(report["runs"]) >= n_runs and report == previous:
                    break
                previous = report
            else:
                raise TimeoutError(f"the runs table did not settle within {PAGE_TIMEOUT_S} s; "
                                   f"last seen: {report}")
            shot = browser.send("Page.captureScreenshot", {"format": "png"}, session)
            (out / "mlflow_ui.png").write_bytes(base64.b64decode(shot["data"]))
            dom = browser.send("Runtime.evaluate", {
                "expression": "document.documentElement.outerHTML", "returnByValue": True},
                session)["result"]["value"]
            (out / "mlflow_ui.html").write_text(dom)
        finally:
            browser.close()
    return report


def experiment_id(base: str, name: str) -> str:
    """The id of experiment ``name``; exits with one line listing the store's experiments
    when it has no such experiment."""
    try:
        return rest(base, "experiments/get-by-name", experiment_name=name)["experiment"][
            "experiment_id"]
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
    found = rest(base, "experiments/search", {"max_results": 1000}).get("experiments", [])
    names = sorted(e["name"] for e in found if e["name"] != "Default")
    sys.exit(f"mlflow_ui_screenshot: --experiment {name!r} is not in the store; it has: "
             f"{', '.join(names) or 'no experiment'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for mlflow_ui.png/.html/.json and the server log")
    parser.add_argument("--store", type=Path,
                        help="an existing mlflow.db to look at (default: build a tiny one)")
    parser.add_argument("--experiment", default="augmentation",
                        help="the experiment whose page to open (default: augmentation)")
    args = parser.parse_args(argv)
    binary = chromium()
    if binary is None:
        sys.exit("mlflow_ui_screenshot: Chromium not found; install it (Debian: apt-get install "
                 "chromium) or set CHROMIUM to its path")
    if args.store and not args.store.is_file():
        sys.exit(f"mlflow_ui_screenshot: --store {args.store} is not a file")
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    from groklab.tracking import ui_url

    with tempfile.TemporaryDirectory(prefix="groklab-ui-") as tmp:
        store = args.store or build_store(Path(tmp))
        with mlflow_ui(store, args.out / "mlflow_ui_server.log") as base:
            exp_id = experiment_id(base, args.experiment)
            runs = rest(base, "runs/search", {"experiment_ids": [exp_id],
                                              "max_results": 1000}).get("runs", [])
            top = [r for r in runs if not any(t["key"] == "mlflow.parentRunId"
                                              for t in r["data"].get("tags", []))]
            page = ui_url(base, exp_id)
            report = capture(binary, page, min(len(top), 10), args.out)
    report = {"url": page, "png": str(args.out / "mlflow_ui.png"),
              "html": str(args.out / "mlflow_ui.html"),
              "logged_runs": sorted(r["info"]["run_name"] for r in top), **report}
    (args.out / "mlflow_ui.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
