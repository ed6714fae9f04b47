"""Loads the status page in headless Chromium (Debian's, driven by Selenium through Debian's
chromedriver), reads the address table, takes a screenshot, then uses the filter form as a
person would and reads the table again. Prints what it saw as JSON; tests/status_page.rs asserts.

usage: status_page_browser.py URL SCREENSHOT.png PROFILE_DIR
"""

import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

url, screenshot, profile = sys.argv[1:4]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1800,1000",
    f"--user-data-dir={profile}",
]:
    options.add_argument(flag)

driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(20)


def rows():
    seen = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#addresses tr[data-ip]"):
        item = {key: row.get_attribute("data-" + key) for key in ["target", "ip", "state", "finding", "since"]}
        item["since_text"] = row.find_element(By.CSS_SELECTOR, "td.since").text
        item["class"] = row.get_attribute("class")
        seen.append(item)
    return seen


try:
    driver.get(url)
    seen = {"title": driver.title, "rows": rows(), "footer": driver.find_element(By.TAG_NAME, "footer").text}
    driver.save_screenshot(screenshot)
    Select(driver.find_element(By.NAME, "finding")).select_by_value("none")
    driver.find_element(By.CSS_SELECTOR, "#filter button").click()
    WebDriverWait(driver, 10).until(lambda d: "finding=none" in d.current_url)
    seen["filtered_url"] = driver.current_url
    seen["filtered_rows"] = rows()
    seen["filtered_count"] = driver.find_element(By.ID, "count").text
    print(json.dumps(seen))
finally:
    driver.quit()
