# The console test's browser: see BROWSER in crates/pier/tests/console.rs.
import json, os, sys, traceback
from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                        TimeoutException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, profile, shots, who = sys.argv[1:5]
SERVICES = base + "/console/projects/default/services"
MARK = "still the same page"
os.makedirs(shots, exist_ok=True)


class Failure(Exception):
    pass


def say(obj):
    print(json.dumps(obj), flush=True)


opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,1800", "--user-data-dir=" + profile]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)
step = 0


# ---- helpers

def css(selector, within=None):
    return (within or driver).find_elements(By.CSS_SELECTOR, selector)


def one(selector, within=None):
    found = css(selector, within)
    if not found:
        raise Failure("nothing matches " + selector)
    return found[0]


def text_of(selector, within):
    found = css(selector, within)
    return found[0].text.strip() if found else None


def wait(cond, what, secs=15):
    """Polls cond() until it returns something true, and returns that."""
    try:
        return WebDriverWait(driver, secs, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException)
                             ).until(lambda _: cond())
    except TimeoutException:
        raise Failure(f"waited {secs} s for {what}") from None


def stale(element):
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True


def loaded():
    return driver.execute_script("return document.readyState") == "complete"


def fill(selector, value):
    field = one(selector)
    field.clear()
    field.send_keys(str(value))


def submit(button, what, done=lambda: False):
    """Clicks button, then waits for what it brings: a new page (the button goes stale), a new
    #message, or done()."""
    old_messages = css("#message")
    button.click()
    wait(lambda: stale(button) or any(m not in old_messages for m in css("#message")) or done(),
         "the page after " + what)
    wait(loaded, "the page after " + what + " to load")


def message():
    found = css("#message")
    if not found:
        return None
    return {"class": found[0].get_attribute("class") or "", "text": found[0].text.strip()}


def service_page():
    wait(lambda: css("h1#service") and css("#revisions tr[data-revision]"),
         "the service page (h1#service and rows of table#revisions)")
    revisions = {}
    for tr in css("#revisions tr[data-revision]"):
        revisions[tr.get_attribute("data-revision")] = {
            "traffic": text_of(".traffic", tr), "tags": text_of(".tags", tr)}
    percents = {}
    for field in css('#traffic input[name^="percent."]'):
        percents[field.get_attribute("name")[len("percent."):]] = field.get_attribute("value")
    return {
        "url": driver.current_url,
        "service": one("h1#service").text.strip(),
        "revisions": revisions,
        "percents": percents,
        "iam": [[tr.get_attribute("data-member"), tr.get_attribute("data-role")]
                for tr in css("#iam tr[data-member]")],
        "message": message(),
        "logs_refused": text_of("#logs-refused", driver),
    }


def save(name):
    stem = os.path.join(shots, f"{who}-{step:02d}-{name}")
    driver.save_screenshot(stem + ".png")
    with open(stem + ".html", "w") as f:
        f.write(driver.page_source)
    return stem + ".png"


def evidence(what):
    out = {}
    try:
        out["url"] = driver.current_url
        out["screenshot"] = save(what + "-failed")
        out["text"] = driver.find_element(By.TAG_NAME, "body").text[:1500]
        out["source"] = driver.page_source[:3000]
    except Exception as e:
        out["text"] = f"(no evidence: {e!r})"
    return out


# ---- commands

def signin(email, password):
    """Opens /console (unless on the sign-in page already), signs in; reports where it landed and
    the page's #error, if any."""
    if "/authorize" not in driver.current_url:
        driver.get(base + "/console")
    wait(lambda: "/authorize" in driver.current_url and css("#email"), "Pier's sign-in page")
    page = driver.current_url
    old_errors = css("#error")
    fill("#email", email)
    fill("#password", password)
    one("#signin").click()

    def landed():
        if driver.current_url.startswith(base + "/console/projects/"):
            return True
        return any(e not in old_errors and e.text.strip() for e in css("#error"))

    wait(landed, "the console, or an error on the sign-in page")
    wait(loaded, "the page after signing in to load")
    errors = css("#error")
    return {"signin_page": page, "url": driver.current_url,
            "error": errors[0].text.strip() if errors else None}


def services():
    if driver.current_url.split("?")[0].rstrip("/") != SERVICES:
        driver.get(SERVICES)
    wait(lambda: css("#services tr[data-service]"), "a service in table#services")
    return [{
        "name": tr.get_attribute("data-service"),
        "status": text_of(".status", tr),
        "url": text_of(".url", tr),
        "deployed": text_of(".deployed", tr),
        "links": [a.get_attribute("href") for a in css("a", tr)],
    } for tr in css("#services tr[data-service]")]


def open_service(name):
    """From the services list, follows the service's link."""
    services()
    row = one(f'#services tr[data-service="{name}"]')
    submit(one(f'a[href$="/console/projects/default/services/{name}"]', row),
           "following the link to " + name)
    return service_page()


def set_traffic(percents, tags):
    for rev, percent in percents.items():
        fill(f'#traffic input[name="percent.{rev}"]', percent)
    for rev, tag in tags.items():
        fill(f'#traffic input[name="tag.{rev}"]', tag)
    submit(one("#save-traffic"), "saving the traffic form")
    wait(lambda: css("#message"), "#message after saving the traffic form")
    return service_page()


def mark():
    """Marks the open page, so that a later command can tell it was not reloaded."""
    driver.execute_script("window.pierConsoleTest = arguments[0]", MARK)
    return driver.current_url


def wait_log(text, secs=15):
    line = wait(lambda: next((l.text for l in css("#logs .log-line") if text in l.text), None),
                f"a .log-line in #logs with {text!r}", secs)
    return {"line": line.strip(),
            "same_page": driver.execute_script("return window.pierConsoleTest") == MARK}


def charts():
    sizes = {}
    for chart in ["chart-requests", "chart-latency", "chart-instances"]:
        canvas = wait(lambda: next(iter(css(f"#{chart} canvas")), None),
                      f"a uPlot canvas in #{chart}", 20)
        sizes[chart] = [canvas.size["width"], canvas.size["height"]]
    return sizes


def grant(member):
    fill("#grant #member", member)
    submit(one("#grant-invoker"), "granting roles/run.invoker to " + member,
           done=lambda: any(tr.get_attribute("data-member") == member
                            for tr in css("#iam tr[data-member]")))
    return service_page()


def revoke(member, role):
    row = one(f'#iam tr[data-member="{member}"][data-role="{role}"]')
    submit(one("button.revoke", row), f"revoking {role} from {member}")
    return service_page()


def deploy(image, command):
    """Submits the deploy form, then follows the operation's page until it is done."""
    fill("#deploy #image", image)
    fill("#deploy #command", command)
    submit(one("#deploy-button"), "submitting the deploy form")
    wait(lambda: css("#phases li"), "the operation's phases (ol#phases)")
    states = set()

    def finished():
        for li in css("#phases li"):
            states.add(li.get_attribute("data-state"))
        done = css("#operation-done")
        return done[0].text.strip() if done and done[0].text.strip() else None

    done = wait(finished, "#operation-done", 60)
    return {"url": driver.current_url, "done": done,
            "phases": [[li.text.strip(), li.get_attribute("data-state")]
                       for li in css("#phases li")],
            "states_seen": sorted(s for s in states if s)}


def signout():
    if not css("#signout"):
        driver.get(SERVICES)
    submit(one("#signout button, #signout [type=submit]"), "signing out")
    driver.get(SERVICES)
    wait(lambda: "/authorize" in driver.current_url, "the sign-in page after signing out")
    return {"url": driver.current_url}


def screenshot(name):
    return save(name)


COMMANDS = {f.__name__: f for f in [signin, services, open_service, set_traffic, mark, wait_log,
                                     charts, grant, revoke, deploy, signout, screenshot]}

try:
    say({"ok": True, "result": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        step += 1
        args = json.loads(line)
        what = args.pop("do")
        try:
            say({"ok": True, "result": COMMANDS[what](**args)})
        except Exception as e:
            say({"ok": False, "error": f"{type(e).__name__}: {getattr(e, 'msg', None) or e}",
                 "trace": traceback.format_exc(limit=4), **evidence(what)})
finally:
    driver.quit()
