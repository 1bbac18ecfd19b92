"""The one exception family kvplan raises for anything a user can fix.

The CLI renders a `KvplanError` as a single line on stderr and exits with its `exit_code`
(2 for bad input). Anything else escaping is a bug.
"""


class KvplanError(Exception):
    """A problem with the user's input or environment, with a message fit to print."""

    exit_code = 2


class InputError(KvplanError):
    """Malformed or impossible input: a flag, a file, a config field."""


class UnknownModelError(KvplanError):
    """A model name that is neither bundled, a local path, nor in the local HF cache."""


class UnsupportedModelError(KvplanError):
    """An architecture kvplan cannot size with confidence (fails closed)."""


class FindingError(KvplanError):
    """A run that could not complete on the device (e.g. out of memory): a finding, exit 1."""

    exit_code = 1


class HubError(KvplanError):
    """The Hub did not give us what sizing needs: network, auth, missing repo or file, rate limit, a bad answer."""
