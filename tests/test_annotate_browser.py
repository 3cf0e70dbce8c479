"""An annotator's view, in headless Chromium (Debian's chromium + chromedriver, driven by
selenium): log in, open the pushed dataset, and find the problem, the numbered steps and the
judge's pre-filled suggestions on the record page."""

import shutil

import pytest

from .test_annotate_e2e import env, owner_dataset, verdicts_file  # noqa: F401  (module fixture)
from .test_cli_judge import cli

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path):
    from .conftest import unavailable

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        unavailable("Debian chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1400",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def test_annotator_sees_problem_steps_and_suggestions(argilla, verdicts_file, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert cli("annotate", "push", verdicts_file, "--dataset", "browser", "--workspace", argilla.workspace,
               env=env(argilla)).returncode == 0
    dataset = owner_dataset(argilla, "browser")
    wait = WebDriverWait(browser, 60)
    browser.get(f"{argilla.url}/sign-in")
    inputs = wait.until(lambda d: (found := d.find_elements(By.CSS_SELECTOR, "input")) and len(found) >= 2 and found)
    annotator = argilla.annotators[0]
    inputs[0].send_keys(annotator.username)
    inputs[1].send_keys(annotator.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "sign-in" not in d.current_url)
    browser.get(f"{argilla.url}/dataset/{dataset.id}/annotation-mode")
    body = wait.until(lambda d: (text := d.find_element(By.TAG_NAME, "body").text) and "Step 0." in text and text)
    shown = {r.fields["problem"]: r for r in dataset.records}
    problem = next(p for p in shown if p.split(".")[0] in body)  # the first pending record's problem text
    steps = shown[problem].fields["solution"].count("**Step ")
    assert all(f"Step {i}." in body for i in range(steps)) and "The judge's diagnosis" in body
    for question, value in (("first_wrong_step", "1"), ("category", "execution"), ("subtype", "computational_error")):
        label = browser.find_element(By.CSS_SELECTOR, f"label[for='{question}_{value}']")
        assert "label-active" in label.get_attribute("class"), question  # pre-filled by the suggestion
        assert label.find_element(By.CSS_SELECTOR, ".label-text__suggestion__score").text == "0.8"
    screenshot = tmp_path / "record.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 50_000
