"""GitHub Actions workflow commands: an error annotation on the file and line of each failed case, then
the report's summary line."""

from ...inputs import printable
from ..document import Report


def render(report: Report) -> str:
    out = []
    for s in report.suites:
        for c in s.cases:
            if not c.passed:
                out.append(f"::error file={_escape_property(c.file)},line={c.line},"
                           f"title={_escape_property(c.title or c.name)}::"
                           + _escape_data(f"{c.message} ({c.context})" if c.context else c.message))
    out.append(printable(report.summary))
    return "\n".join(out) + "\n"


def _escape_data(text: str) -> str:
    """The runner's escapes for CR, LF and %, then no other control character (a CI log is a terminal too)."""
    return printable(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
