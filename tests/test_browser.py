"""The live monitor where users see it: JupyterLab in headless Chromium, driven by Playwright.

The test starts JupyterLab on localhost (a free port, a token, a temporary root, config, data
and runtime folder: nothing user-level is read or written), opens a notebook it wrote itself
that starts a search on the embedded teacher data with the live monitor, and checks in the page:
the alpha and operation-weight plots gain points while the search runs, the Stop button ends it
and the next cell gets the stopped result with the best state, the fusion diagram renders, and
the page logged no JavaScript error. A second notebook waits for its run in a cell and presses
the toolbar's Interrupt (a real SIGINT to the kernel): the run stops, the waiting cell gets the
stopped result.

Marker ``browser`` (``pytest -m browser``). It needs the system Chromium (Debian's ``chromium``
package; ``OPTFUSION_CHROMIUM`` names another executable) and pip ``playwright`` (its own
browsers are never downloaded). When either is missing it skips, unless
``OPTFUSION_REQUIRE_BROWSER=1`` (CI), then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import DATA_SAMPLES, REPO

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("OPTFUSION_CHROMIUM", "/usr/bin/chromium")
TOKEN = "optfusion-browser-test"
NOTEBOOK = "monitor.ipynb"
SERVER_START_S = 60  # JupyterLab answering its REST API
CELL_S = 60  # a cell's output (the first one imports torch and prepares the data)
PLOT_S = 45  # the plots gaining points, the run ending after Stop

# The notebook the browser runs. A long search (it only ends by Stop): every 5 steps a snapshot.
SETUP = f"""\
import dataclasses
import tempfile

import torch

from optfusion_lab import viz
from optfusion_lab.experiments import prepared_data, search_configs
from optfusion_lab.fusion_search import search
from optfusion_lab.widgets import LiveMonitor

torch.set_num_threads(1)
data = prepared_data("teacher", tempfile.mkdtemp() + "/teacher", None, {str(DATA_SAMPLES)!r})
supernet_cfg, train_cfg, search_cfg = search_configs(
    preset="tiny", embed_dim=4, num_layers=3, batch_size=256, history_every=5, device="cpu",
    threads=1)
train_cfg = dataclasses.replace(train_cfg, epochs=1000, patience=1000)
print("ready")
"""
START = """\
monitor = LiveMonitor(every=5)
run = monitor.start(search, data, supernet_cfg, train_cfg, search_cfg)
"""
RESULT = """\
result = run.result(timeout=60)
print(f"stopped={result.stopped} epochs={len(result.fit.history)}")
print(f"genotype={json.dumps(result.genotype.to_dict())}")
"""
DIAGRAM = "viz.fusion_diagram(result.genotype, title='found')"
CELLS = ["import json\n" + SETUP, START, RESULT, DIAGRAM]
# The second notebook: the cell waits for the run, the kernel is busy, Interrupt stops the run.
INTERRUPT_NOTEBOOK = "interrupt.ipynb"
WAIT = """\
result = run.result()
print(f"stopped={result.stopped} reason={monitor.stop_reason} status={monitor.status}")
"""
INTERRUPT_CELLS = [SETUP, START, WAIT]

# JavaScript read from the page. The monitor's three plots (alpha, operation weights, metrics)
# are drawn in the three Output widgets of the .optfusion-monitor panel, in that order; a plot
# being redrawn shows no traces for a moment.
PLOTS_JS = """() => Array.from(document.querySelectorAll('.optfusion-monitor .widget-output'))
    .map(output => {
        const gd = output.querySelector('.js-plotly-plot');
        return Array.from((gd && gd.data) || []).map(t => {
            const x = t.x || [];
            return [x.length, x.length ? Number(x[x.length - 1]) : null];
        });
    })"""
NOTEBOOK_READY_JS = """(n) => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    if (!panel || !panel.content || !panel.sessionContext) return false;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return panel.content.widgets.length === n && !!kernel && kernel.status === 'idle';
}"""
RUN_CELL_JS = """(i) => {
    const panel = window.jupyterapp.shell.currentWidget;
    panel.content.activeCellIndex = i;
    window.jupyterapp.commands.execute('notebook:run-cell');
}"""
OUTPUT_JS = """(i) => {
    const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
    if (cell.model.executionCount === null) return null;
    return cell.model.outputs.toJSON();
}"""


def require(reason: str) -> None:
    """Skip, or fail under OPTFUSION_REQUIRE_BROWSER=1 (CI installs what the test needs)."""
    if os.environ.get("OPTFUSION_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (OPTFUSION_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, method: str = "GET", timeout: float = 5.0):
    request = urllib.request.Request(url, method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def write_notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free localhost port: its base URL. Shut down afterwards."""
    if not Path(CHROMIUM).is_file():
        require(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require("playwright is not installed (pip install -e '.[dev]')")
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        require("JupyterLab is not installed (pip install -e '.[notebooks]')")
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    write_notebook(root / NOTEBOOK, CELLS)
    write_notebook(root / INTERRUPT_NOTEBOOK, INTERRUPT_CELLS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "JUPYTER_CONFIG_DIR": str(base / "config"), "JUPYTER_DATA_DIR": str(base / "data"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "IPYTHONDIR": str(base / "ipython")}
    env.pop("OPTFUSION_MONITOR", None)
    port = free_port()
    log = (base / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
         "--ServerApp.allow_root=True",  # CI containers run as root
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.extension_manager=readonly",  # no PyPI queries
         "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.news_url=None"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited ({server.returncode}):\n"
                            + (base / "lab.log").read_text()[-3000:])
            try:
                api(f"{url}/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in {SERVER_START_S} s:\n"
                                + (base / "lab.log").read_text()[-3000:])
                time.sleep(0.2)  # polling the server, under the deadline above
        yield url
    finally:
        try:
            api(f"{url}/api/shutdown", method="POST")
            server.wait(timeout=20)
        except (urllib.error.URLError, ConnectionError, TimeoutError,
                subprocess.TimeoutExpired):
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def page(lab):
    """A headless Chromium page; ``page.js_errors`` collects what the page logged as errors."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
        except Error as error:
            require(f"Chromium at {CHROMIUM} does not start: {error}")
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console.error: {m.text}")
                    if m.type == "error" else None)
            page.js_errors = errors
            yield page
        finally:
            browser.close()


def wait(page, js: str, arg=None, timeout_s: float = PLOT_S, what: str = "") -> None:
    """Poll ``js`` in the page until it is truthy; past the deadline, fail with what the page
    shows (the monitor's plots and status, the JavaScript errors)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(js, arg=arg, timeout=timeout_s * 1000, polling=100)
    except PlaywrightTimeout:
        status = page.evaluate(
            "() => Array.from(document.querySelectorAll('.optfusion-monitor code'))"
            ".map(e => e.textContent).concat(Array.from(document.querySelectorAll("
            "'.optfusion-monitor .optfusion-stop')).map(e => 'button: ' + e.textContent))")
        pytest.fail(f"not within {timeout_s} s: {what}\nplots (points, latest step per line): "
                    f"{plots(page)}\nstatus: {status}\nJavaScript errors: {page.js_errors}")


def run_cell(page, i: int, expect: str | None = None, timeout_s: float = CELL_S) -> list:
    """Run cell ``i``; wait until it has been executed (and its text output holds ``expect``);
    its outputs (nbformat JSON). A cell that raised fails the test with its traceback."""
    page.evaluate(RUN_CELL_JS, i)
    check = f"""(i) => {{
        const outputs = ({OUTPUT_JS})(i);
        if (outputs === null) return false;
        const text = JSON.stringify(outputs);
        return text.includes('"output_type":"error"') || {json.dumps(expect or "")} === ''
            || text.includes({json.dumps(expect or "")});
    }}"""
    wait(page, check, i, timeout_s, f"cell {i} executed" + (f", printing {expect!r}"
                                                            if expect else ""))
    outputs = page.evaluate(OUTPUT_JS, i)
    for output in outputs:
        if output["output_type"] == "error":
            pytest.fail(f"cell {i} raised {output['ename']}: {output['evalue']}\n"
                        + "\n".join(output["traceback"]))
    return outputs


def text_of(outputs: list) -> str:
    return "".join("".join(o["text"]) if isinstance(o.get("text"), list) else o.get("text", "")
                   for o in outputs if o["output_type"] == "stream")


def plots(page) -> list[list[list]]:
    """Per monitor plot, per trace: [points, step of the latest point]."""
    return page.evaluate(PLOTS_JS)


def latest_steps(page) -> tuple[float, float]:
    """The step of the latest point of the alpha and the operation-weight plot (-1: none)."""
    alpha, operations = plots(page)[:2]

    def latest(traces):
        steps = [s for n, s in traces if n and s is not None]
        return min(steps) if steps and len(steps) == len(traces) else -1

    return latest(alpha), latest(operations)


def wait_for_new_points(page, after: tuple[float, float]) -> tuple[float, float]:
    """Wait until every line of the alpha and operation-weight plots has a point later than
    ``after``; the new latest steps."""
    check = f"""(after) => {{
        const plots = ({PLOTS_JS})().slice(0, 2);
        if (plots.length < 2) return false;
        return plots.every((traces, k) => traces.length > 0
            && traces.every(([n, step]) => n > 0 && step !== null && step > after[k]));
    }}"""
    wait(page, check, list(after), PLOT_S, f"new points after steps {after}")
    return latest_steps(page)


def test_jupyterlab_monitor_moves_live_stops_and_hands_over_the_best_state(lab, page):
    page.goto(f"{lab}/lab/tree/{NOTEBOOK}?token={TOKEN}", timeout=CELL_S * 1000)
    wait(page, NOTEBOOK_READY_JS, len(CELLS), CELL_S, "the notebook open, its kernel idle")
    assert "ready" in text_of(run_cell(page, 0, expect="ready"))
    run_cell(page, 1)  # the cell returns at once: the search runs in the background

    wait(page, f"() => ({PLOTS_JS})().length === 3", None, CELL_S, "the panel and its 3 plots")
    first = wait_for_new_points(page, (-1, -1))
    second = wait_for_new_points(page, first)  # the same lines, later points: it moves
    assert second[0] > first[0] and second[1] > first[1]
    # Stop once an epoch has ended (so there is a best state): the validation AUC is plotted.
    wait(page, f"() => {{ const m = ({PLOTS_JS})()[2]; return m.length >= 3 && m[2][0] >= 1; }}",
         None, PLOT_S, "a validation AUC point (an epoch ended)")
    points = plots(page)
    assert all(n > 0 for n, _ in points[0] + points[1]), points

    # The click on Stop, as the page's own event (Playwright's pointer click waits for the
    # panel to hold still, which its redraws make slow on a busy machine).
    wait(page, """() => {
        const button = document.querySelector('.optfusion-monitor .optfusion-stop');
        if (!button || button.disabled) return false;
        button.click();
        return true;
    }""", None, PLOT_S, "the Stop button clicked")
    wait(page, "() => document.querySelector('.optfusion-monitor .optfusion-stop').textContent"
         ".includes('Stopped')", None, PLOT_S, "the Stop button reading Stopped")
    text = text_of(run_cell(page, 2, expect="genotype="))
    assert "stopped=True" in text, text
    genotype = json.loads(text.split("genotype=", 1)[1].splitlines()[0])
    assert genotype["num_layers"] == 3 and genotype["edges"], genotype

    run_cell(page, 3)
    wait(page, """() => {
            const cell = window.jupyterapp.shell.currentWidget.content.widgets[3];
            const gd = cell.node.querySelector('.jp-OutputArea .js-plotly-plot');
            return !!gd && (gd.data || []).length > 0 && !!gd.querySelector('svg.main-svg');
        }""", None, CELL_S, "the fusion diagram drawn")
    assert page.js_errors == [], "\n".join(page.js_errors)


def test_interrupt_while_a_cell_waits_for_the_run_stops_it(lab, page):
    """The toolbar's Interrupt (JupyterLab's kernel interrupt: SIGINT to the kernel process)
    while ``run.result()`` blocks the cell: the run stops cooperatively and the waiting cell
    prints the stopped result, as the monitor's docstring promises."""
    page.goto(f"{lab}/lab/tree/{INTERRUPT_NOTEBOOK}?token={TOKEN}", timeout=CELL_S * 1000)
    wait(page, NOTEBOOK_READY_JS, len(INTERRUPT_CELLS), CELL_S,
         "the notebook open, its kernel idle")
    assert "ready" in text_of(run_cell(page, 0, expect="ready"))
    run_cell(page, 1)
    wait(page, f"() => ({PLOTS_JS})().length === 3", None, CELL_S, "the panel and its 3 plots")
    wait_for_new_points(page, (-1, -1))  # the run is going
    page.evaluate(RUN_CELL_JS, 2)  # blocks in run.result(): the kernel stays busy
    wait(page, """() => {
        const panel = window.jupyterapp.shell.currentWidget;
        const kernel = panel.sessionContext.session.kernel;
        return kernel.status === 'busy' && panel.content.widgets[2].model.executionCount === null;
    }""", None, CELL_S, "cell 2 waiting for the run, the kernel busy")
    before = latest_steps(page)
    page.evaluate("() => window.jupyterapp.commands.execute('kernelmenu:interrupt')")
    wait(page, f"""() => {{
        const outputs = ({OUTPUT_JS})(2);
        return outputs !== null && JSON.stringify(outputs).includes('stopped=');
    }}""", None, PLOT_S, "cell 2 printing the stopped result after Interrupt")
    outputs = page.evaluate(OUTPUT_JS, 2)
    assert not [o for o in outputs if o["output_type"] == "error"], outputs
    text = text_of(outputs)
    assert "stopped=True reason=Interrupt status=stopped" in text, text
    assert latest_steps(page) >= before  # the plots kept what the run had drawn
    assert page.js_errors == [], "\n".join(page.js_errors)
