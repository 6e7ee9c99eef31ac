"""`bcauto ui` end to end in a headless Chromium: after a small search, the MLflow UI lists the trial runs by
name, compares their parameters and metrics, and shows the study report on the parent run; Ctrl-C stops it.

Needs the Debian packages chromium and chromium-driver (CI installs them with .ci/browser.sh); skipped
without them. BCAUTO_UPDATE_SCREENSHOTS=1 rewrites docs/images/mlflow-compare.png from this run.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from helpers import tiny_study_toml
from mlflow.tracking import MlflowClient

from bcauto.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "images" / "mlflow-compare.png"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
WAIT_S = 90  # page loads on a busy 2-core CI machine

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason=("headless Chromium is not installed: apt-get install chromium chromium-driver (or run .ci/browser.sh)"),
)

# two quick trials: one epoch each on 32x32 images
STUDY = tiny_study_toml(
    study={"trials": None, "seed": 9, "pruner": None},  # seed 9: its first two trials differ in backbone and augmentation
    train={"head_epochs": 1, "patience": None},
    search={"imbalance": ["none", "class_weights"], "lr_head": None, "head_units2": 16},
)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    (root / "tiny.toml").write_text(STUDY)
    stores = {"storage": f"sqlite:///{root}/optuna.db", "tracking_uri": f"sqlite:///{root}/mlflow.db"}
    assert (
        main(
            [
                "search",
                "--study",
                str(root / "tiny.toml"),
                "--trials",
                "2",
                "--workers",
                "0",
                "--data",
                "synthetic:160",
                "--storage",
                stores["storage"],
                "--tracking-uri",
                stores["tracking_uri"],
                "--work-dir",
                str(root / "work"),
            ]
        )
        == 0
    )
    return root, stores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UiProcess:
    """`bcauto ui` as a child process, its output read line by line."""

    def __init__(self, args: list[str], cwd: Path):
        env = {**os.environ, "COLUMNS": "200"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from bcauto.cli import main; sys.exit(main())", "ui", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    self.reader.join(timeout=5)  # the last lines may still be on their way
                    if self.lines.empty():
                        break
                continue
            self.output.append(line)
            if found := re.search(pattern, line):
                return found
        pytest.fail(f"`bcauto ui` never printed {pattern!r}; its output:\n{''.join(self.output)}")

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # the Debian driver, never selenium-manager's download
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, *texts: str) -> str:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(lambda d: all(t in page_text(d) for t in texts))
    except TimeoutException:
        missing = [t for t in texts if t not in page_text(driver)]
        pytest.fail(f"{driver.current_url} never showed {missing}; it shows:\n{page_text(driver)[:3000]}")
    return page_text(driver)


def click(driver, css: str, within=None) -> None:
    """Click the first displayed element matching ``css``, waiting for it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d):
        return next((e for e in (within or d).find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None)

    WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(found).click()


def test_ui_lists_the_trial_runs_and_compares_their_params_and_metrics(searched, browser, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, stores = searched
    client = MlflowClient(tracking_uri=stores["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    parent = client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'study'")[0]
    trials = sorted(client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'trial'"), key=lambda r: r.info.run_name)
    assert [r.info.run_name[:10] for r in trials] == ["trial-000 ", "trial-001 "]

    port = free_port()
    ui = UiProcess(["--name", "tiny", "--tracking-uri", stores["tracking_uri"], "--storage", stores["storage"], "--port", str(port)], root)
    try:
        url = ui.wait_for(r"MLflow UI \(.*\): (http://\S+)", timeout=180).group(1)
        assert url == f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
        ui.wait_for("Ctrl-C stops", timeout=10)

        # a second UI on the same port: a clear error, nothing started
        capsys.readouterr()
        assert main(["ui", "--tracking-uri", stores["tracking_uri"], "--port", str(port)]) == 2
        error = capsys.readouterr().err
        assert f"127.0.0.1:{port}" in error and "already in use" in error and "--port" in error

        # the experiment page: the study's parent run; expanded, its trial runs by name
        browser.get(url)
        wait_for_text(browser, parent.info.run_name)
        rows = [row for row in browser.find_elements(By.CSS_SELECTOR, "[role=row]") if parent.info.run_name in row.text]
        click(browser, "[col-id*='Run Name'] button", within=rows[0])
        wait_for_text(browser, *(r.info.run_name for r in trials))

        # the parent run: the study report
        browser.get(f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}/artifacts")
        wait_for_text(browser, "leaderboard.csv", "optimization_history.png", "param_importances.png")

        # the comparison of the trial runs: names, parameters and metrics side by side
        runs = urllib.parse.quote(json.dumps([r.info.run_id for r in trials]))
        browser.get(
            f"http://127.0.0.1:{port}/#/compare-runs?runs={runs}&experiments={urllib.parse.quote(json.dumps([experiment.experiment_id]))}"
        )
        text = wait_for_text(
            browser, "Parameters", "Metrics", "backbone", "val_macro_f1", "final_val_macro_f1", *(r.info.run_name for r in trials)
        )
        for run in trials:
            assert run.data.params["backbone"] in text and run.data.params["augmentation"] in text
        save_compare_screenshot(browser, tmp_path / "mlflow-compare.png")

        # Ctrl-C: the UI and its server stop, the port is free again
        ui.process.send_signal(signal.SIGINT)
        assert ui.process.wait(timeout=30) == 0
        ui.wait_for("stopped", timeout=5)
        WebDriverWait(None, 15, poll_frequency=0.5).until(lambda _: not port_open(port))
    finally:
        ui.stop()


def save_compare_screenshot(browser, path: Path) -> None:
    """The comparison with run names, differing parameters and metrics in view: the docs' picture."""
    from selenium.webdriver.common.by import By

    def button(text):
        return next((b for b in browser.find_elements(By.CSS_SELECTOR, "button, [role=button]") if b.text.strip() == text), None)

    # close the assistant panel, the model-training sidebar, fold the plots, keep the rows that differ; a newer UI without one of these
    # controls still gets its screenshot
    for control in (
        lambda: browser.find_element(By.CSS_SELECTOR, "button[aria-label='Close']"),
        lambda: button("Model training"),
        lambda: button("Visualizations"),
        lambda: browser.find_element(By.CSS_SELECTOR, "[aria-label='Parameters - Show diff only']"),
        lambda: browser.find_element(By.CSS_SELECTOR, "[aria-label='Metrics - Show diff only']"),
    ):
        try:
            control().click()
            time.sleep(0.5)
        except Exception:
            pass
    browser.set_window_size(1280, 1500)
    if details := button("Run details"):
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", details)
    time.sleep(1)
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("BCAUTO_UPDATE_SCREENSHOTS") == "1":
        from PIL import Image

        image = Image.open(path).convert("RGB")
        artifacts = button("Artifacts")  # cut the empty artifact previews off below the metrics
        bottom = browser.execute_script("return arguments[0].getBoundingClientRect().top", artifacts) if artifacts else 0
        scale = image.width / browser.execute_script("return window.innerWidth")
        if 600 < bottom * scale < image.height:
            image = image.crop((0, 0, image.width, int(bottom * scale) - 8))
        SCREENSHOT.parent.mkdir(exist_ok=True)
        image.quantize(colors=128).save(SCREENSHOT, optimize=True)
        assert SCREENSHOT.stat().st_size < 300_000
