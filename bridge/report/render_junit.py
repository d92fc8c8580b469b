"""The drift report as JUnit XML, so CI systems show drift as failed tests: one ``<testcase>``
per managed object (classname ``policy``, ``group_assignment``, ``user_assignment``, ``rule``),
a ``<failure>`` carrying what differs. Follows the Ant JUnit schema the CI tools read:
``<testsuite>`` has name, tests, failures, errors, skipped, time, timestamp, hostname, and its
counts equal its children; every ``<failure>`` has a message and a type."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .model import DriftReport, format_value, utc

# Characters XML 1.0 does not allow at all (even as character references): C0 controls other
# than tab, newline and carriage return, lone surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 forbids shown as a visible escape (``\\x1b``,
    ``\\ud800``), so tenant text cannot make the file unreadable to a CI parser."""
    return _NOT_XML.sub(lambda m: _escape(ord(m.group())), text)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def _sanitize(root: ET.Element) -> None:
    for el in root.iter():
        el.attrib = {k: xml_safe(v) for k, v in el.attrib.items()}
        if el.text:
            el.text = xml_safe(el.text)
        if el.tail:
            el.tail = xml_safe(el.tail)


def render_junit(report: DriftReport) -> str:
    """Users in sync are one summary test case (they can number 100,000); every user assignment
    not in sync is its own failing test case."""
    suite = ET.Element("testsuite")
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("tenant_id", report.tenant_id or ""),
        ("tenant_name", report.tenant_name or ""),
        ("tenant_domain", report.tenant_domain or ""),
        ("operator", report.run_by.operator or "" if report.run_by else ""),
        ("host", report.run_by.host or "" if report.run_by else ""),
        ("app_id", report.run_by.app_id or "" if report.run_by else ""),
        ("ticket", report.run_by.ticket or "" if report.run_by else ""),
        ("reason", report.run_by.reason or "" if report.run_by else ""),
        ("tool_version", report.tool_version),
        ("desired_path", report.desired_path),
        ("desired_sha256", report.desired_sha256),
        ("observed_at", f"{utc(report.observed):%Y-%m-%dT%H:%M:%SZ}"),
        ("fail_on", ",".join(sorted(report.fail_on))),
    ):
        ET.SubElement(props, "property", name=name, value=value)

    def case(classname: str, name: str, failure: str | None = None, detail: str = "") -> None:
        tc = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        if failure is not None:
            el = ET.SubElement(tc, "failure", message=failure, type="drift")
            el.text = detail

    for p in report.policies:
        if p.status == "in_sync":
            case("policy", p.name)
        elif p.status == "missing":
            case(
                "policy",
                p.name,
                "policy is missing from the tenant",
                "\n".join(f"{r.name}: expected {format_value(r.expected)}" for r in p.managed),
            )
        elif p.status == "extra":
            case("policy", p.name, "policy exists but the desired state says it should not")
        else:
            rows = p.drifted
            case(
                "policy",
                p.name,
                f"{len(rows)} setting(s) differ: " + ", ".join(r.name for r in rows),
                "\n".join(
                    f"{r.name}: expected {format_value(r.expected)}, actual "
                    f"{format_value(r.actual)}"
                    for r in rows
                ),
            )
    for g in report.group_assignments:
        if g.status == "in_sync":
            case("group_assignment", g.label)
            continue
        want = f"{g.expected_policy} rank {g.expected_rank}" if g.expected_policy else "none"
        have = f"{g.actual_policy} rank {g.actual_rank}" if g.actual_policy else "none"
        case(
            "group_assignment",
            g.label,
            f"group assignment {g.status.replace('_', ' ')}: {g.detail}",
            f"expected {want}, actual {have}",
        )
    if report.user_counts["in_sync"]:
        case("user_assignment", f"{report.user_counts['in_sync']} user assignment(s) in sync")
    for u in report.users_listed:
        case(
            "user_assignment",
            u.label,
            f"user assignment {u.status}: expected "
            f"{u.expected_policy or 'none'}, actual {u.actual_policy or 'none'}",
        )
    for f in report.findings:
        name = f"{f.rule_id}: {', '.join(f.policies)}" if f.policies else f.rule_id
        if report.counts(f):
            case("rule", name, f"{f.severity}: {f.title}", f.explanation)
        else:
            tc = ET.SubElement(suite, "testcase", classname="rule", name=name, time="0")
            ET.SubElement(tc, "system-out").text = f"{f.severity}: {f.title}\n{f.explanation}"

    cases = suite.findall("testcase")
    suite.attrib.update(
        name="teams-bridge drift",
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.find("failure") is not None)),
        errors="0",
        skipped="0",
        time="0",
        # The Ant schema's timestamp has no zone; it is UTC.
        timestamp=f"{utc(report.generated_at):%Y-%m-%dT%H:%M:%S}",
        hostname=report.tenant_id or "unknown-tenant",
    )
    ET.SubElement(suite, "system-out").text = (
        f"in_sync={str(report.in_sync).lower()} drift_count={report.drift_count} "
        f"exit_code={report.exit_code}"
    )
    ET.SubElement(suite, "system-err")
    root = ET.Element(
        "testsuites",
        name="teams-bridge",
        tests=suite.get("tests", "0"),
        failures=suite.get("failures", "0"),
        errors="0",
        time="0",
    )
    root.append(suite)
    _sanitize(root)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
