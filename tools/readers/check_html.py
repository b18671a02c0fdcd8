"""Renders every HTML report meshconf wrote in headless Chromium, takes a screenshot, and checks the page's key
elements through the DOM Chromium built (after the page's own script drew the timeline and charts) against the
run's JSON record.

usage: check_html.py CHROMIUM REPORT_DIR
Prints one line per report; exits 1 on any mismatch, 2 when there is nothing to check.
"""
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import tempfile
from html.parser import HTMLParser

WIDTH, HEIGHT = 1280, 1800
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--hide-scrollbars", "--run-all-compositor-stages-before-draw",
         "--virtual-time-budget=5000", f"--window-size={WIDTH},{HEIGHT}"]


class Dom(HTMLParser):
    """A flat list of (tag, attrs, text) plus the stack of enclosing elements' attrs for each."""

    def __init__(self):
        super().__init__()
        self.elements, self.stack = [], []

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": [dict(p["attrs"]) for p in self.stack]}
        self.elements.append(el)
        if tag not in ("meta", "br", "img", "input", "link"):
            self.stack.append(el)

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for el in self.stack:
            el["text"] += data

    def by_id(self, i):
        return next((e for e in self.elements if e["attrs"].get("id") == i), None)

    def with_class(self, tag, cls):
        return [e for e in self.elements if e["tag"] == tag and cls in (e["attrs"].get("class") or "").split()]


class Hung(Exception):
    """Chromium did not finish in time, on every attempt."""


def chromium(browser, args, timeout=90, attempts=2):
    """Runs headless Chromium with a fresh profile in a process group of its own. Headless Chromium now and then
    hangs on a page it rendered a moment before (seen once in CI under load, on --screenshot after --dump-dom of
    the same page had worked): the whole group is killed at the deadline and the call tried once more."""
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                out, err = proc.communicate(timeout=timeout)
                return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                # The group was made by Popen above (start_new_session): only Chromium and its helpers are in it.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                print(f"chromium {args[0]} timed out after {timeout} s (attempt {attempt} of {attempts})",
                      file=sys.stderr)
    raise Hung(f"chromium {args[0]} timed out after {timeout} s, {attempts} times")


def png_size(path):
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24]), len(data)


def problems_of(browser, page, record):
    problems = []
    url = page.resolve().as_uri()
    dump = chromium(browser, ["--dump-dom", url])
    if dump.returncode != 0 or "<html" not in dump.stdout:
        return [f"chromium --dump-dom failed ({dump.returncode}): {dump.stderr.strip()[-300:]}"]
    dom = Dom()
    dom.feed(dump.stdout)
    body = next((e for e in dom.elements if e["tag"] == "body"), None)
    if not body or body["attrs"].get("data-rendered") != "yes":
        problems.append("the page's script did not run (body lacks data-rendered)")
    for e in dom.elements:
        for attr in ("src", "href"):
            v = e["attrs"].get(attr) or ""
            if v.startswith(("http:", "https:", "//")):
                problems.append(f"<{e['tag']} {attr}={v}> would fetch from the network")

    events = record["events"]
    start = next((e for e in events if e["event"] == "run-started"), None)
    if start:
        for key in ("provider", "scenario"):
            el = dom.by_id(key)
            if not el or el["text"].strip() != start[key]:
                problems.append(f"#{key} shows {el and el['text']!r}, record says {start[key]!r}")
        want_kind = "REHEARSAL" if start["dataplane"] == "computed" else "CONFORMANCE RUN"
        el = dom.by_id("run-kind")
        if not el or el["text"].strip() != want_kind:
            problems.append(f"#run-kind shows {el and el['text']!r}; a {start['dataplane']} data plane is a {want_kind}")
    finished = [e for e in events if e["event"] == "step-finished" and e["outcome"]["status"] != "skipped"]
    steps = [e for e in dom.with_class("rect", "step")]
    if sorted(s["attrs"].get("data-step") for s in steps) != sorted(e["id"] for e in finished):
        problems.append(f"timeline shows {len(steps)} steps, record has {len(finished)} finished")
    for e in finished:
        if not e["id"].startswith("check-traffic/"):
            continue
        source = e["id"].split("/from-", 1)[-1]
        want = {k[len("count/"):]: v for k, v in e["properties"].items() if k.startswith("count/")}
        bars = [b for b in dom.with_class("rect", "bar")
                if any(p.get("data-source") == source for p in b["parents"])]
        got = {f"{b['attrs'].get('data-version')}@{b['attrs'].get('data-cluster')}": b["attrs"].get("data-count")
               for b in bars}
        if got != want:
            problems.append(f"chart from {source} shows {got}, record says {want}")
        pv = [x for x in dom.with_class("span", "p-value") if any(p.get("data-source") == source for p in x["parents"])]
        if e["properties"].get("p-value") and (not pv or pv[0]["text"].strip() != e["properties"]["p-value"]):
            problems.append(f"p-value from {source} not shown as {e['properties']['p-value']}")
    diag = next((e for e in events if e["event"] == "diagnostics"), None)
    if diag:
        el = dom.by_id("diagnosis")
        want = diag["diagnosis"] or "No diagnosis"
        if not el or want not in " ".join(el["text"].split()):
            problems.append(f"#diagnosis shows {el and el['text']!r}, record says {want!r}")
        links = dom.with_class("a", "diag-file")
        if len(links) != len(diag["files"]):
            problems.append(f"{len(links)} evidence links, record lists {len(diag['files'])} files")
        for a in links:
            if not (page.parent / a["attrs"].get("href", "")).is_file():
                problems.append(f"evidence link {a['attrs'].get('href')} leads nowhere")

    with tempfile.TemporaryDirectory() as d:
        shot = pathlib.Path(d) / "page.png"
        r = chromium(browser, [f"--screenshot={shot}", url])
        info = png_size(shot) if shot.exists() else None
        if r.returncode != 0 or not info:
            problems.append(f"no screenshot ({r.returncode}): {r.stderr.strip()[-200:]}")
        elif info[0] != (WIDTH, HEIGHT) or info[1] < 8000:
            problems.append(f"screenshot is {info[0]} and {info[1]} bytes: blank or wrong size")
        else:
            keep = page.with_suffix(".png")
            keep.write_bytes(shot.read_bytes())
    return problems


def main():
    browser, report_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    pages = sorted(report_dir.glob("*.html"))
    if not pages:
        print(f"no HTML reports under {report_dir}: run the suites first")
        return 2
    bad = 0
    for page in pages:
        record = json.loads(page.with_suffix(".json").read_text())
        try:
            problems = problems_of(browser, page, record)
        except Hung as e:
            problems = [str(e)]
        bad += bool(problems)
        print(("MISMATCH " if problems else "ok ") + f"{page.name} in Chromium"
              + ("; " + "; ".join(problems) if problems else f" (screenshot {page.with_suffix('.png').name})"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
