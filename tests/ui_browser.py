"""Berth's web UI in a real headless Chromium (driven by Selenium and chromedriver).

Usage: ui_browser.py BASE_URL MANIFEST_DIGEST RESULTS_FILE [SCREENSHOT_DIR]

BASE_URL is a registry with users alice (may pull, push and delete everything, and admin) and bob (may
pull public/** only), holding team/app:v1 (MANIFEST_DIGEST, signed with cosign), team/app:v2
and public/app:v1. Each step is written to RESULTS_FILE as `ok|FAILED<TAB>what<TAB>detail`;
the test suite counts them. With SCREENSHOT_DIR, the main pages are saved there as PNG files.
"""

import os
import sys
import time
import traceback

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

base, digest, results_file = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
shots = sys.argv[4] if len(sys.argv) > 4 else None
results = open(results_file, "w")


def step(what, fn):
    try:
        detail = fn()
        if detail is False:
            raise AssertionError("the page did not show it")
        results.write(f"ok\t{what}\t\n")
    except Exception as e:  # every failure is one failed step, with why
        detail = f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " | ")
        results.write(f"FAILED\t{what}\t{detail}\n")
        traceback.print_exc()
    results.flush()


def shot(name):
    if shots:
        driver.save_screenshot(os.path.join(shots, name))


opts = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800",
            "--no-first-run", "--disable-extensions", "--disable-background-networking"]:
    opts.add_argument(arg)
opts.binary_location = "/usr/bin/chromium"
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)
text = lambda: driver.find_element(By.TAG_NAME, "main").text
header = lambda: driver.find_element(By.TAG_NAME, "header").text


def shows(words, where=text, within=10):
    """Whether the page shows `words` within a few seconds (a click's navigation is not waited for)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if words in where():
                return True
        except Exception:  # the page is being replaced
            pass
        time.sleep(0.1)
    return False


def log_in(user):
    driver.get(base + "/ui/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(user + "-pw")
    driver.find_element(By.ID, "login").click()
    return shows(user, header) and driver.current_url.endswith("/ui/")


try:
    def anonymous():
        driver.get(base + "/ui/")
        return "team/app" not in text() and "Log in" in driver.find_element(By.TAG_NAME, "header").text
    step("anonymous sees no repository and a way to log in", anonymous)

    step("alice logs in with her password", lambda: log_in("alice"))

    def browse():
        assert "team/app" in text() and "public/app" in text(), text()
        shot("ui-repositories.png")
        driver.find_element(By.LINK_TEXT, "team/app").click()
        assert shows("v2") and "v1" in text(), text()
        shot("ui-repository.png")
        return True
    step("she browses to the image skopeo pushed, and sees its tags", browse)

    def tag_rows():
        rows = driver.find_elements(By.CSS_SELECTOR, "table.tags tbody tr")
        return [[td.text for td in r.find_elements(By.CSS_SELECTOR, "td")] for r in rows]

    def sizes_and_platforms():
        driver.get(base + "/ui/repository?name=team/app")
        rows = {r[0]: r for r in tag_rows()}
        # Tag, digest, platforms, size: an image's size is its config and layers (1.5 MB here),
        # not its manifest's few hundred bytes; an index lists each platform.
        assert rows["v1"][2] == "linux/amd64" and rows["v1"][3].endswith("MiB"), rows
        assert "linux/amd64" in rows["v2"][2] and "linux/arm64" in rows["v2"][2], rows
        assert rows["v2"][3].endswith("KiB"), rows
        return True
    step("each tag shows its image's size and platforms", sizes_and_platforms)

    def ordered():
        driver.get(base + "/ui/repository?name=team/app")
        assert [r[0] for r in tag_rows()] == ["v2", "v1"], tag_rows()  # last pushed first
        driver.find_element(By.LINK_TEXT, "last pulled").click()
        shows("order=pulled", lambda: driver.current_url)
        rows = tag_rows()
        # v1 was pulled after both were pushed; v2 never was.
        assert [r[0] for r in rows] == ["v1", "v2"] and rows[0][5] != "never", rows
        driver.find_element(By.LINK_TEXT, "name").click()
        shows("order=name", lambda: driver.current_url)
        assert [r[0] for r in tag_rows()] == ["v1", "v2"], tag_rows()
        return True
    step("tags sort by last pushed, last pulled or name", ordered)

    def signature():
        short = digest.split(":")[1][:12]
        driver.find_element(By.PARTIAL_LINK_TEXT, short).click()
        shows("Referrers")
        page = text()
        assert digest in page, page
        assert "application/vnd.dev.cosign.artifact.sig.v1+json" in page, page
        assert "Layers" in page, page
        # The config: how it runs, and the history beside the layer each step made.
        assert "Command" in page and "History 4 steps" in page and "COPY data-1 /data" in page, page
        shot("ui-manifest.png")
        return True
    step("its manifest page lists the cosign signature among its referrers", signature)

    def copy_ready():
        driver.get(base + "/ui/repository?name=team/app")
        values = [e.get_attribute("value") for e in driver.find_elements(By.CSS_SELECTOR, "input.copy")]
        host = base.split("://")[1]
        return f"docker pull {host}/team/app:v1" in values and f"crane pull {host}/team/app:v1 image.tar" in values
    step("each tag has copy-ready pull commands for docker, podman and crane", copy_ready)

    def delete():
        driver.get(base + "/ui/repository?name=team/app")
        rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        row = [r for r in rows if r.find_element(By.CSS_SELECTOR, "td").text == "v1"][0]
        row.find_element(By.LINK_TEXT, "Delete").click()
        assert shows("deletes the tag v1"), text()
        driver.find_element(By.ID, "confirm-delete").click()
        shows("Deleted v1.")
        page = text()
        assert "Deleted v1." in page, page
        tags = [r.find_element(By.CSS_SELECTOR, "td").text for r in driver.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert tags == ["v2"], tags
        return True
    step("she deletes tag v1 after its preview, and it is gone", delete)

    def operate():
        driver.find_element(By.LINK_TEXT, "Operate").click()
        shows("Storage")
        page = text()
        assert "Storage" in page and "team/app" in page and "public/app" in page, page
        # The cache's hits and the upstream's rate limit; the webhook's deliveries.
        cells = lambda cls: [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"table.{cls} tbody td")]
        cache = cells("cache")
        assert cache[0] == "docker.io" and cache[1] != "none yet" and int(cache[2]) > 0, cache
        assert cache[6].isdigit(), cache  # the rate limit the upstream reported
        deliveries = cells("deliveries")
        assert deliveries[:2] == ["scanner", "webhook"], deliveries
        shot("ui-operate.png")
        driver.find_element(By.ID, "dry-run").click()
        shows("Collection")
        for _ in range(50):  # the run is started; its page shows it until it ends
            if "would remove" in text() or "failed" in text():
                break
            time.sleep(0.2)
            driver.refresh()
        page = text()
        # v1 was just untagged: its manifest is younger than the hour of grace, so nothing goes.
        assert "A dry run" in page and "would remove 0 tags" in page, page
        # team/app's retention policy keeps its most recently pushed tag, v2, and says so.
        decisions = [[td.text for td in tr.find_elements(By.CSS_SELECTOR, "td")]
                     for tr in driver.find_elements(By.CSS_SELECTOR, "table.retention tbody tr")]
        assert decisions and decisions[0][:3] == ["team/app", "v2", "kept"], decisions
        return True
    step("as an admin she reads storage per repository, the cache, the webhooks, and a dry run's "
         "report with its retention decisions", operate)

    def dark():
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        driver.get(base + "/ui/")
        bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        shot("ui-repositories-dark.png")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
        light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(20, 24, 28)" and light == "rgb(255, 255, 255)", (bg, light)
        return True
    step("a dark theme follows the system's preference", dark)

    def log_out():
        driver.find_element(By.CSS_SELECTOR, "header button").click()
        return shows("Log in", header) and "team/app" not in text()
    step("she logs out", log_out)

    step("bob logs in", lambda: log_in("bob"))

    def bob_sees_little():
        assert "public/app" in text() and "team/app" not in text(), text()
        assert "Operate" not in header()
        driver.get(base + "/ui/operate")
        assert "for those granted admin" in text(), text()
        driver.get(base + "/ui/repository?name=public/app")
        assert "v1" in text() and not driver.find_elements(By.LINK_TEXT, "Delete"), text()
        driver.get(base + "/ui/repository?name=team/app")
        assert "does not exist" in text(), text()
        return True
    step("bob sees neither team/app nor a delete button", bob_sees_little)

    def no_violations():
        logs = driver.get_log("browser")
        # bob's visits to team/app (404) and to the admin page (403) are refused on purpose.
        expected = ("/ui/repository?name=team/app ", "/ui/operate ")
        bad = [e["message"] for e in logs if e["level"] == "SEVERE" and not any(x in e["message"] for x in expected)]
        assert not bad, bad
        return True
    step("no page broke the Content-Security-Policy or failed to load a resource", no_violations)
finally:
    driver.quit()
    results.close()
