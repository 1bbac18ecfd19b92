"""GitHub Actions workflow commands: an error annotation on the file and line of each failed case, then
the report's summary line."""

from ..document import Report


def render(report: Report) -> str:
    out = []
    for s in report.suites:
        for c in s.cases:
            if not c.passed:
                out.append(f"::error file={_escape_property(c.file)},line={c.line},"
                           f"title={_escape_property(c.title or c.name)}::"
                           + _escape_data(f"{c.message} ({c.context})" if c.context else c.message))
    out.append(report.summary)
    return "\n".join(out) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
