"""JUnit XML: a testsuite per suite (its settings as properties), a testcase per case, <failure> when failed."""

import xml.etree.ElementTree as ET

from ...inputs import printable
from ..document import Report


def render(report: Report) -> str:
    """Every string through `printable`: XML 1.0 allows no control character but tab and newlines, not even
    as a character reference, and a deployment name may carry one."""
    cases = [c for s in report.suites for c in s.cases]
    root = ET.Element("testsuites", name=printable(report.name), tests=str(len(cases)),
                      failures=str(sum(not c.passed for c in cases)), errors="0", skipped="0", time="0")
    for s in report.suites:
        suite = ET.SubElement(root, "testsuite", name=printable(s.name), tests=str(len(s.cases)),
                              failures=str(sum(not c.passed for c in s.cases)), errors="0", skipped="0", time="0",
                              file=printable(s.file))
        props = ET.SubElement(suite, "properties")
        for key, value in s.properties:
            ET.SubElement(props, "property", name=printable(key), value=printable(value))
        for c in s.cases:
            case = ET.SubElement(suite, "testcase", name=printable(c.name), classname=printable(c.classname),
                                 file=printable(c.file), line=str(c.line), time="0")
            if not c.passed:
                failure = ET.SubElement(case, "failure", message=printable(c.message), type=c.failure_type)
                failure.text = "\n".join(printable(d) for d in c.details)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
