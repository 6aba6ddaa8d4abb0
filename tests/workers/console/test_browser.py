"""The console in a real browser (headless Chromium through Selenium and chromium-driver)
against the real broker, a real `fraud worker`, the real `fraud feedback-processor` and
`fraud console` processes: sign in; a scam produced to the input topic appears in the
queue without a reload; open it, see its evidence; confirm it (the `c` key); the feedback
record carries the analyst's name; the worker applies the bank change (timed from the
key press); a paraphrase then alerts with the confirmed message as its first evidence;
a false alert cleared shows its bank change.

With FRAUD_RESULTS_DIR set, the time from the confirming key press to the worker's bank
version changing goes to console.json; with FRAUD_SCREENSHOTS_DIR set (docs/console), the
screenshots go there (else to the test's temporary directory).
"""

import json
import os
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from fraud.config import ConsoleSettings
from fraud.index import ReferenceIndex
from fraud.scoring.verdicts import reference_id_for
from tests.results import record_result
from tests.workers.kafka_helpers import read_topic, worker_settings, worker_status
from tests.workers.test_security import listening_addresses
from workers.processes import free_port, start_fraud_process, stop_process
from workers.producer import produce
from workers.state import publish_index

pytestmark = [pytest.mark.integration, pytest.mark.model]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORD = "a long test password"  # noqa: S105 (the test analyst's)
SCAM = (
    "HMRC: you are owed a tax rebate of £312.40. Confirm your bank details within 24 hours "
    "at hmrc-rebate-claim.co.uk to receive it"
)
PARAPHRASE = (
    "HMRC notice: a tax rebate of £298.10 is owed to you. Confirm your bank details in the "
    "next 24 hours at hmrc-rebate-claim.co.uk to get it"
)
# A genuine receipt that the seed bank flags (one of the demo's false alerts).
RECEIPT = "Apex Mobile: thanks, we've received your payment of £18.00. Your account is up to date."
WAIT_S = 90


def _message(message_id: str, text: str, recipient: str) -> dict:
    return {"id": message_id, "text": text, "sender": "+44 7700 900327", "recipient": recipient}


def _index_version(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return json.loads(r.read())["index_version"]
    except OSError:
        return None


def _wait(what: str, check, timeout_s: float = WAIT_S, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail("chromium and chromium-driver are needed: `make chromium` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


@pytest.fixture
def pipeline(encoder, seed_index_dir, kafka_settings, tmp_path):
    """The seed bank published; a worker, the feedback processor and the console running,
    with an analyst `ana`. Yields (settings, the worker's metrics port, console URL)."""
    kafka = kafka_settings
    index_dir = tmp_path / "index"
    seed = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    publish_index(kafka, seed, index_dir)
    worker_port, console_port = free_port(), free_port()
    console = ConsoleSettings(
        database=tmp_path / "console.sqlite3",
        port=console_port,
        worker_urls=f"http://127.0.0.1:{worker_port}",
    )
    settings = worker_settings(kafka, index_dir, worker_port).model_copy(
        update={"console": console}
    )
    (tmp_path / "password").write_text(PASSWORD + "\n")
    with ExitStack() as stack:
        logs = {}
        for name in ("add-user", "worker", "feedback-processor", "console"):
            logs[name] = stack.enter_context(open(tmp_path / f"{name}.log", "w+"))  # noqa: SIM115
        add = ["console", "add-user", "ana", "--role", "analyst"]
        add += ["--password-file", str(tmp_path / "password")]
        assert start_fraud_process(add, settings, logs["add-user"]).wait(60) == 0
        procs = {}
        for name in ("worker", "feedback-processor", "console"):
            procs[name] = proc = start_fraud_process(name, settings, logs[name])
            stack.callback(stop_process, proc, 30)
        try:
            _wait("the worker ready", lambda: worker_status(worker_port, "/readyz")[0] == 200)
            url = f"http://127.0.0.1:{console_port}"
            _wait("the console up", lambda: _answers(f"{url}/login"))
            # loopback only, as by default (docs/security.md)
            assert listening_addresses(procs["console"].pid) == {("127.0.0.1", console_port)}
            yield settings, worker_port, url
        except BaseException:
            for name, log in logs.items():
                log.seek(0)
                print(f"--- {name} log ---\n{log.read()[-3000:]}")
            raise


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (the console's)
            return r.status == 200
    except OSError:
        return False


def _shots_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("FRAUD_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_an_analyst_confirms_and_clears_alerts_in_a_real_browser(pipeline, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    settings, worker_port, url = pipeline
    kafka, shots = settings.kafka, _shots_dir(tmp_path)
    browser = _browser()
    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.1)
    try:
        browser.get(f"{url}/queue")  # not signed in: the sign-in page
        browser.find_element(By.ID, "name").send_keys("ana")
        browser.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
        wait.until(lambda b: b.current_url.endswith("/queue"))
        assert "ana (analyst)" in browser.find_element(By.ID, "whoami").text
        browser.execute_script("window.notReloaded = true")

        # A scam arrives: it shows at the top of the open page, which never reloads.
        produce(kafka, kafka.input_topic, [_message("scam-1", SCAM, "+44 7700 900111")])
        row = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-id="scam-1"]'))[0]
        assert browser.execute_script("return window.notReloaded === true")
        assert "tax_refund" in row.text and "hmrc-rebate-claim" in row.text
        browser.save_screenshot(str(shots / "queue.png"))

        # Its page: the text, the evidence from the seed bank with shared words marked.
        row.click()
        wait.until(lambda b: b.find_elements(By.ID, "evidence"))
        assert "hmrc-rebate-claim.co.uk" in browser.find_element(By.ID, "text").text
        evidence = browser.find_elements(By.CSS_SELECTOR, "#evidence tbody tr")
        assert evidence and browser.find_elements(By.CSS_SELECTOR, "#evidence mark")
        browser.save_screenshot(str(shots / "alert.png"))

        # Confirm with the keyboard; time until the worker scores with the change.
        before = _index_version(worker_port)
        pressed = time.monotonic()  # send_keys returns once the next page has loaded
        browser.find_element(By.TAG_NAME, "body").send_keys("c")
        _wait("the worker's bank version changed", lambda: _index_version(worker_port) != before)
        click_to_workers_s = time.monotonic() - pressed
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#workers li.applied"))
        changes = browser.find_element(By.ID, "bank-change-table").text
        assert str(reference_id_for("scam-1")) in changes and "ana" in changes
        browser.save_screenshot(str(shots / "verdict.png"))
        verdicts = [json.loads(r.value) for r in read_topic(kafka, kafka.feedback_topic, 1)]
        assert verdicts[0]["analyst"] == "ana" and verdicts[0]["verdict"] == "fraud"
        assert verdicts[0]["message_id"] == "scam-1" and verdicts[0]["category"] == "tax_refund"

        # A paraphrase now alerts with the confirmed message as its first evidence.
        browser.get(f"{url}/queue")
        produce(kafka, kafka.input_topic, [_message("para-1", PARAPHRASE, "+44 7700 900222")])
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-id="para-1"]'))[0].click()
        first = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#evidence tbody tr"))[0]
        assert first.get_attribute("data-reference") == str(reference_id_for("scam-1"))
        assert "owed a tax rebate" in first.text

        # A genuine receipt alerts; cleared, it becomes a legit reference.
        browser.get(f"{url}/queue")
        produce(kafka, kafka.input_topic, [_message("fp-1", RECEIPT, "+44 7700 900333")])
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-id="fp-1"]'))[0].click()
        wait.until(lambda b: b.find_elements(By.ID, "evidence"))
        browser.find_element(By.TAG_NAME, "body").send_keys("x")  # to the reason
        browser.switch_to.active_element.send_keys("a genuine receipt from Apex" + Keys.ENTER)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#workers li.applied"))
        changes = browser.find_element(By.ID, "bank-change-table").text
        assert "legit" in changes and "a genuine receipt from Apex" in changes
        browser.save_screenshot(str(shots / "cleared.png"))

        browser.get(f"{url}/bank?source=feedback")
        assert "a genuine receipt from Apex" in browser.find_element(By.TAG_NAME, "main").text
        browser.save_screenshot(str(shots / "bank.png"))
        browser.get(f"{url}/overview")
        browser.save_screenshot(str(shots / "overview.png"))
    finally:
        browser.quit()

    print(f"confirming key press to the worker's new bank version: {click_to_workers_s:.2f} s")
    assert click_to_workers_s < 10  # the goal
    record_result("console", "verdict_to_workers", seconds=round(click_to_workers_s, 2))
