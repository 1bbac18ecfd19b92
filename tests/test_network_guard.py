"""The suite itself never leaves loopback, and kvplan's code never opts into remote code."""

import re
import socket
from pathlib import Path

import pytest
from conftest import NetworkBlocked

REPO = Path(__file__).resolve().parents[1]


def test_non_loopback_connections_are_blocked():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(NetworkBlocked):
            s.connect(("10.1.2.3", 443))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(NetworkBlocked):
            s.connect(("huggingface.co", 443))


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.create_connection(server.getsockname(), timeout=5):
        pass


def test_no_remote_code_and_safe_yaml_only():
    sources = [p for p in (REPO / "kvplan").rglob("*.py")] + list((REPO / "kernels").rglob("*.py"))
    for path in sources:
        text = path.read_text()
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path
        assert not re.search(r"yaml\.(unsafe_)?load\((?![^)]*Loader=_YamlLoader)", text), path
        assert "yaml.Loader" not in text and "FullLoader" not in text and "UnsafeLoader" not in text, path
