"""Reads every JUnit file meshconf wrote with a third-party reader (junitparser, as CI dashboards do) and checks
it against the run's JSON record, which must validate against the documented schema.

usage: check_reports.py SCHEMA REPORT_DIR
Prints one line per report; exits 1 on any mismatch, 2 when there is nothing to check.
"""
import json
import pathlib
import sys

import jsonschema
from junitparser import Error, Failure, JUnitXml, Skipped


def expected(record):
    """Counts the JUnit file must show, derived from the event record alone."""
    steps, finished, duration = [], {}, None
    for e in record["events"]:
        kind = e["event"]
        if kind == "run-started":
            steps = [s[0] for s in e["steps"]]
        elif kind == "step-finished":
            finished[e["id"]] = e["outcome"]
        elif kind == "run-finished":
            duration = e["duration"]["secs"] + e["duration"]["nanos"] / 1e9
    failures = sum(1 for o in finished.values() if o["status"] == "failed" and o["kind"] == "conformance")
    errors = sum(1 for o in finished.values() if o["status"] == "failed" and o["kind"] == "infrastructure")
    skipped = sum(1 for o in finished.values() if o["status"] == "skipped")
    skipped += sum(1 for s in steps if s not in finished)
    tests = len(set(steps) | set(finished))
    return {"tests": tests, "failures": failures, "errors": errors, "skipped": skipped, "time": duration}


def read(junit_path):
    """What the third-party reader sees, counted from the test cases themselves."""
    xml = JUnitXml.fromfile(str(junit_path))
    suites = list(xml) if xml._tag == "testsuites" else [xml]
    seen = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for suite in suites:
        seen["time"] += float(suite.time or 0)
        for case in suite:
            seen["tests"] += 1
            results = case.result
            seen["failures"] += sum(1 for r in results if isinstance(r, Failure))
            seen["errors"] += sum(1 for r in results if isinstance(r, Error))
            seen["skipped"] += sum(1 for r in results if isinstance(r, Skipped))
        # The suite's own attributes must agree with its cases.
        for attr in ("tests", "failures", "errors", "skipped"):
            declared = getattr(suite, attr)
            if declared is not None and int(declared) != seen[attr]:
                seen[f"declared-{attr}"] = int(declared)
    return seen


def diagnostics_problems(record, junit_path):
    """A diagnostics event must point at files that exist, add up to what it says and fit its budget, and the
    JUnit case of each failed step it covers must link to it."""
    problems = []
    xml = None
    for e in record["events"]:
        if e["event"] != "diagnostics":
            continue
        d = junit_path.parent / e["link"]
        if not d.is_dir():
            problems.append(f"diagnostics {e['link']}/ missing")
            continue
        on_disk = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        if on_disk != e["bytes"] or on_disk > e["budget"]:
            problems.append(f"diagnostics {e['link']}/ holds {on_disk} bytes; record says {e['bytes']} of {e['budget']}")
        for f in e["files"]:
            p = d / f["name"]
            if not p.is_file() or p.stat().st_size != f["bytes"]:
                problems.append(f"diagnostics file {f['name']} missing or not {f['bytes']} bytes")
        xml = xml or JUnitXml.fromfile(str(junit_path))
        suites = list(xml) if xml._tag == "testsuites" else [xml]
        for step in e["steps"]:
            cases = [c for s in suites for c in s if c.name.startswith(f"{step}: ")]
            if not any(e["link"] in (c.system_out or "") for c in cases):
                problems.append(f"the JUnit case of {step} does not link to {e['link']}/")
    return problems


def main():
    schema = json.loads(pathlib.Path(sys.argv[1]).read_text())
    reports = sorted(pathlib.Path(sys.argv[2]).glob("*.junit.xml"))
    if not reports:
        print(f"no JUnit files under {sys.argv[2]}: run the suites first")
        return 2
    bad = 0
    for junit in reports:
        record_path = junit.with_name(junit.name.replace(".junit.xml", ".json"))
        try:
            record = json.loads(record_path.read_text())
            jsonschema.validate(record, schema)
        except jsonschema.ValidationError as e:
            print(f"MISMATCH {junit.name}: its record {record_path.name} breaks the schema at {e.json_path}: "
                  f"{e.message[:160]}")
            bad += 1
            continue
        except (OSError, ValueError) as e:
            print(f"MISMATCH {junit.name}: its record {record_path.name}: {str(e).splitlines()[0]}")
            bad += 1
            continue
        want, got = expected(record), read(junit)
        diffs = [f"{k}: junit {got.get(k)} vs record {want[k]}" for k in ("tests", "failures", "errors", "skipped")
                 if got.get(k) != want[k]]
        diffs += [f"{k}: declared {v}" for k, v in got.items() if k.startswith("declared-")]
        diffs += diagnostics_problems(record, junit)
        if want["time"] is not None and abs(got["time"] - want["time"]) > 0.01 + 0.001 * want["time"]:
            diffs.append(f"time: junit {got['time']:.3f}s vs record {want['time']:.3f}s")
        status = "MISMATCH" if diffs else "ok"
        bad += bool(diffs)
        print(f"{status} {junit.name}: {got['tests']} cases, {got['failures']} failures, {got['errors']} errors, "
              f"{got['skipped']} skipped, {got['time']:.1f}s" + ("; " + "; ".join(diffs) if diffs else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
