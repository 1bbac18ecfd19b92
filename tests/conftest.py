import ipaddress
import os
import socket
import tempfile

from hypothesis import HealthCheck, settings

# Must run before anything imports triton kernels: Triton picks interpreter vs compiler
# when a kernel is decorated.
os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Introspection records go to a throwaway cache, never the user's ~/.cache/kvplan.
os.environ["KVPLAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="kvplan-test-cache-")


# Fuzz budgets: `ci` keeps the suite fast; `pytest --hypothesis-profile nightly` (or
# KVPLAN_FUZZ_PROFILE=nightly) runs 5,000 examples per property.
# CI draws the same examples every run (derandomize) so a result never depends on the draw; nightly explores.
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("KVPLAN_FUZZ_PROFILE", "ci"))


class NetworkBlocked(RuntimeError):
    """Raised when a test tries to reach anything but loopback."""


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like never leave the machine
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already be a lookup outside


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}; only loopback is allowed")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}; only loopback is allowed")
    return _real_connect_ex(self, address)


_real_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback((host,)) and host != "localhost":
        raise NetworkBlocked(f"test tried to resolve {host!r}; only loopback is allowed")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


def pytest_terminal_summary(terminalreporter):
    try:
        from fuzzing import CASES
    except ImportError:
        return
    if CASES:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases run: {sum(CASES.values())} ({parts})")
