"""Bounded HTTP to the Hub: every request has a byte cap and a deadline, and every failure is one HubError.

Requests go through huggingface_hub's session (its token, endpoint, proxies and offline switch).
What a hostile or broken server can cost (docs/reliability.md):
  * bytes: a body is read up to the cap its caller gives (LISTING_MAX_BYTES, a config.json's,
    an index's, a header's); a Content-Length over it is refused before reading;
  * time: HF_HUB_DOWNLOAD_TIMEOUT (default 10 s) bounds each read, as in huggingface_hub, and
    everything one command fetches must finish within DEADLINE_S (12 s), so neither a server that
    drips a byte a second nor one that lists thousands of slow shards can hold kvplan past the 20 s
    a hostile input may cost (issue 13); one stalled read ends at its own timeout if that comes first;
  * encodings: kvplan asks for `identity` and refuses a body sent otherwise (byte ranges address
    the stored file, and a compressed body would need bounds of its own);
  * redirects: the session follows at most 20; a loop ends as one line.
"""

import importlib
import os
import re
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import quote

from ...errors import HubError, InputError
from ...extras import require_extra
from ...inputs import MiB, parse_json, printable
from .names import is_commit, valid_repo_file

DEFAULT_TIMEOUT_S = 10.0  # huggingface_hub's own default; HF_HUB_DOWNLOAD_TIMEOUT overrides it
# All Hub requests of one command (listing, config, index, every shard header, every model). A 163-shard
# DeepSeek-V3 is 21 rounds of 8 parallel range requests, a few seconds on a broadband link; a slow link
# raises HF_HUB_DOWNLOAD_TIMEOUT past its default, and the deadline grows in proportion.
DEADLINE_S = 12.0
LISTING_MAX_BYTES = 16 * MiB  # the API's file list; a model repo's is KiB

# Inside one_deadline(): {"ends": time.monotonic() when the command's Hub time is up}, set by its first fetch.
_command: ContextVar[dict | None] = ContextVar("kvplan_hub_command", default=None)


@contextmanager
def one_deadline():
    """Every fetch inside shares one deadline, counted from the first (the CLI runs each command so):
    a deployment file naming many Hub models cannot multiply it. Outside, each fetch has its own."""
    token = _command.set({})
    try:
        yield
    finally:
        _command.reset(token)


class Abandoned(HubError):
    """A request given up because its fetch already failed: never the error to report."""


@dataclass(frozen=True)
class Body:
    data: bytes
    headers: dict  # lower-case names
    total_bytes: int | None  # the whole file's size, when a range answer says it


class HubClient:
    """The Hub requests sizing needs for one repo, under one deadline (the command's, inside one_deadline())."""

    def __init__(self, repo_id: str, revision: str):
        self.timeout_s = read_timeout_s()  # kvplan's own reading first: its message is the clearer one
        require_extra("hub", "huggingface_hub", what="hub access")
        try:
            from huggingface_hub.utils import build_hf_headers
        except ValueError as exc:  # its constants are read from HF_* variables at import, some with int()
            raise InputError(f"huggingface_hub cannot start with this environment ({exc}): it reads "
                             "HF_HUB_DOWNLOAD_TIMEOUT and HF_HUB_ETAG_TIMEOUT as whole seconds") from None
        from ... import __version__

        self.repo_id, self.revision = repo_id, revision
        self.endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.deadline_s = DEADLINE_S * max(1.0, self.timeout_s / DEFAULT_TIMEOUT_S)
        ends = time.monotonic() + self.deadline_s
        shared = _command.get()
        self.ends = ends if shared is None else shared.setdefault("ends", ends)
        self.stopped = threading.Event()  # set when the fetch has failed: requests still running give up
        try:  # reads the token file under HF_HOME, which may be no directory at all
            self.headers = build_hf_headers(library_name="kvplan", library_version=__version__)
        except OSError as exc:
            raise InputError(f"hub: cannot read the HF token at {printable(exc.filename or 'HF_HOME')} "
                             f"({exc.strerror or exc}); check HF_HOME and HF_TOKEN_PATH") from None
        self.headers["Accept-Encoding"] = "identity"

    # --- the requests ---------------------------------------------------------------------------

    def listing(self) -> tuple[str, dict[str, int | None]]:
        """The commit `revision` points to and the repo's files (name -> size in bytes, if given)."""
        what = "the repo listing"
        url = f"{self.endpoint}/api/models/{self.repo_id}/revision/{quote(self.revision, safe='')}?blobs=true"
        info = parse_json(self.get(url, what, LISTING_MAX_BYTES).data, f"hub: {what} of {self.repo_id}")
        siblings = info.get("siblings") if isinstance(info, dict) else None
        sha = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(sha, str) or not is_commit(sha):
            raise self.bad_answer(what, "no 40-hex commit sha")
        if not isinstance(siblings, list) or not all(isinstance(s, dict) for s in siblings):
            raise self.bad_answer(what, "no list of files")
        files: dict[str, int | None] = {}
        for s in siblings:
            name, size = s.get("rfilename"), s.get("size")
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
                raise self.bad_answer(what, f"a size of {size!r:.40} bytes")
            if valid_repo_file(name):  # a name that could climb out of a directory is never asked for
                files[name] = size
        return sha, files

    def file(self, name: str, commit: str, max_bytes: int) -> Body:
        return self.get(self.file_url(name, commit), name, max_bytes)

    def file_range(self, name: str, commit: str, first: int, last: int) -> Body:
        return self.get(self.file_url(name, commit), f"the header of {name}", last - first + 1, (first, last))

    def file_url(self, name: str, commit: str) -> str:
        """As huggingface_hub's hf_hub_url builds it, from this client's endpoint (not the one fixed at import)."""
        return f"{self.endpoint}/{self.repo_id}/resolve/{quote(commit, safe='')}/{quote(name)}"

    def bad_answer(self, what: str, problem: str) -> HubError:
        return HubError(f"hub: {self.endpoint} answered {what} of {self.repo_id} with {problem}")

    # --- one bounded request --------------------------------------------------------------------

    def get(self, url: str, what: str, max_bytes: int, byte_range: tuple[int, int] | None = None) -> Body:
        """GET `url` (or bytes first..last of it) within the deadline; at most `max_bytes` of body."""
        ends, late = self.ends, self._late(what)
        if time.monotonic() >= ends:
            raise late
        outcome: dict = {}
        done = threading.Event()

        def transfer():
            try:
                outcome["body"] = self._transfer(url, what, max_bytes, byte_range, ends, late)
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc
            finally:
                done.set()

        # A daemon thread: the socket read that a drip-feeding server stalls cannot hold the deadline,
        # nor the interpreter's exit.
        threading.Thread(target=transfer, name="kvplan-hub", daemon=True).start()
        while not done.wait(0.05):
            if self.stopped.is_set():
                raise Abandoned(f"hub: fetching {what} of {self.repo_id} was abandoned")
            if time.monotonic() >= ends:
                self.stopped.set()
                raise late
        if "error" in outcome:
            raise outcome["error"]
        return outcome["body"]

    def _late(self, what: str) -> HubError:
        return HubError(f"hub: gave up on {what} of {self.repo_id} from {self.endpoint}: kvplan's Hub requests of one "
                        f"command may take {self.deadline_s:.3g} s in all (on a slow link, raise HF_HUB_DOWNLOAD_TIMEOUT "
                        f"above {DEFAULT_TIMEOUT_S:g} s: the limit grows with it)")

    def _transfer(self, url: str, what: str, max_bytes: int, byte_range: tuple[int, int] | None,
                  ends: float, late: HubError) -> Body:
        from huggingface_hub.utils import get_session

        headers = dict(self.headers)
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        with self._transport_errors(what):
            with get_session().stream("GET", url, headers=headers, timeout=self.timeout_s,
                                      follow_redirects=True) as response:
                if response.status_code >= 400:
                    raise self._status_error(response, what)
                got = {k.lower(): v for k, v in response.headers.items()}
                encoding = got.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise self.bad_answer(what, f"a {encoding!r:.40}-encoded body (kvplan asks for identity)")
                # 200 to a range request: the server sent the whole file from byte 0.
                skip = byte_range[0] if byte_range is not None and response.status_code == 200 else 0
                stop = skip + max_bytes
                length = _int_or_none(got.get("content-length"))
                if byte_range is None and length is not None and length > max_bytes:
                    raise self._too_large(what, max_bytes, length)
                body = bytearray()
                for chunk in response.iter_raw():
                    if time.monotonic() >= ends:
                        raise late
                    if self.stopped.is_set():
                        raise Abandoned(f"hub: fetching {what} of {self.repo_id} was abandoned")
                    body += chunk
                    if byte_range is None and len(body) > max_bytes:
                        raise self._too_large(what, max_bytes)
                    if byte_range is not None and len(body) >= stop:
                        break  # a range, or the start of a whole file sent for one: the rest is not read
                total = _range_total(got.get("content-range"))
                if total is None and response.status_code == 200 and byte_range is not None:
                    total = length
                return Body(bytes(body[skip:stop]), got, total)

    def _too_large(self, what: str, max_bytes: int, length: int | None = None) -> HubError:
        has = f" ({length:,} bytes)" if length is not None else ""
        return HubError(f"hub: {what} of {self.repo_id}{has} is over kvplan's {max_bytes:,}-byte limit for it")

    @contextmanager
    def _transport_errors(self, what: str):
        """Timeouts, refused or dropped connections, redirect loops, bad URLs, offline mode -> one HubError."""
        from huggingface_hub.errors import OfflineModeIsEnabled
        from huggingface_hub.utils import get_session

        # The session's HTTP library (httpx in huggingface_hub 1.x, httpx2 in 2.x) defines the exceptions.
        http = importlib.import_module(type(get_session()).__module__.split(".")[0])
        try:
            yield
        except http.TimeoutException:
            raise HubError(f"hub: timed out after {self.timeout_s:g} s fetching {what} of {self.repo_id} from "
                           f"{self.endpoint} (HF_HUB_DOWNLOAD_TIMEOUT sets the limit)") from None
        except OfflineModeIsEnabled:
            raise HubError("hub: huggingface_hub is in offline mode (HF_HUB_OFFLINE); unset it to fetch") from None
        except http.TooManyRedirects:
            raise HubError(f"hub: too many redirects fetching {what} of {self.repo_id} from {self.endpoint}") from None
        except (http.HTTPError, http.InvalidURL, http.StreamError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else "no detail"
            raise HubError(f"hub: connection to {self.endpoint} failed fetching {what} of {self.repo_id}: "
                           f"{type(exc).__name__}: {detail}") from None

    def _status_error(self, response, what: str) -> HubError:
        code = response.status_code
        error = response.headers.get("x-error-code", "")
        repo, rev, site = self.repo_id, self.revision, f"{self.endpoint}/{self.repo_id}"
        has_token = "authorization" in self.headers
        login = "set HF_TOKEN or run `hf auth login`"
        if error == "GatedRepo":
            who = "the account of your token" if has_token else f"an account, then {login}"
            return HubError(f"hub: {repo} is gated ({code}): accept its terms at {site} with {who}")
        if error == "RevisionNotFound":
            return HubError(f"hub: {repo} has no revision {rev!r} (404)")
        if error == "EntryNotFound":
            return HubError(f"hub: {repo}@{rev}: {what} not found (404)")
        if error == "RepoNotFound" or code == 404:
            hint = "or your token cannot read it" if has_token else f"or it is private: {login}"
            return HubError(f"hub: {repo} not found at {self.endpoint} ({code}), {hint}")
        if code == 401:
            return HubError(f"hub: {repo}: 401 Unauthorized fetching {what} ({'token rejected' if has_token else login})")
        if code == 403:
            return HubError(f"hub: {repo}: 403 Forbidden fetching {what}; your token lacks read access to it")
        if code == 429:
            wait = _retry_after_s(response.headers)
            after = f"retry after {wait} s" if wait is not None else "retry later"
            return HubError(f"hub: rate limited (429) fetching {what} of {repo}; {after}"
                            + ("" if has_token else f", or {login} for a higher limit"))
        if code >= 500:
            return HubError(f"hub: {self.endpoint} failed with {code} fetching {what} of {repo}; try again later")
        return HubError(f"hub: HTTP {code} fetching {what} of {repo}")


def read_timeout_s() -> float:
    text = os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise InputError(f"HF_HUB_DOWNLOAD_TIMEOUT={text!r} must be a positive number of seconds")
    return value


def _retry_after_s(headers) -> int | None:
    """Seconds to wait, from `Retry-After: 7` or the Hub's `RateLimit: "api";r=0;t=7`."""
    value = (headers.get("retry-after") or "").strip()
    if re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    match = re.search(r";\s*t=([0-9]{1,9})\b", headers.get("ratelimit") or "")
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    """The whole-file size from `Content-Range: bytes 0-7/12345`."""
    if not content_range or "/" not in content_range:
        return None
    return _int_or_none(content_range.rsplit("/", 1)[1].strip())


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and re.fullmatch(r"[0-9]{1,19}", text.strip()) else None
