"""One redaction rule for everything that leaves the process: files, MLflow params and tags, logs, errors.

What is hidden: the userinfo of a URI (`https://user:token@host` → `https://***@host`), the values of a URI's
query string (a pre-signed URL's signature and credential), any value of a key that names a secret, and the
value of every secret-named environment variable (AWS_SECRET_ACCESS_KEY, MLFLOW_TRACKING_PASSWORD,
RAY_AUTH_TOKEN, ...) wherever it appears. The running process keeps the real values; only what is written or
shown goes through `redact`.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, TextIO

MASK = "***"

SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|credential|private_key|access_key|api_key|apikey)")
"""A key or environment variable whose name matches holds a secret (AWS_ACCESS_KEY_ID included: it names the account)."""

MIN_SECRET_CHARS = 8
"""Environment values shorter than this are not searched for (`true`, `1`, a region): too common to be secret."""

_URI = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/?#\"'<>@]*@)?([^\s?#\"'<>]*)(\?[^\s#\"'<>]*)?")
_QUERY_VALUE = re.compile(r"=[^&;]*")


def redact(text: str) -> str:
    """`text` with URI userinfo, URI query values and the environment's secret values replaced by ***."""
    for value in _environment_secrets():
        text = text.replace(value, MASK)
    return _URI.sub(_redact_uri, text)


def redact_tree(value: Any) -> Any:
    """A copy of nested dicts/lists/strings with every string redacted and the values of secret-named keys masked."""
    if isinstance(value, dict):
        return {key: redact_item(key, item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    return value


def secret_key(name: str) -> bool:
    """Whether a config key, tag or environment variable name says its value is a secret."""
    return bool(SECRET_NAME.search(name.rsplit(".", 1)[-1]))


class RedactingStream:
    """A text stream that redacts every write and passes everything else (isatty, fileno, flush) through."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def redact_output() -> None:
    """Route this process's stdout and stderr through `redact`: our prints, log lines and tracebacks, and those
    of the libraries we call (MLflow's "View run at" line, Ray's forwarded worker logs). Idempotent."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))


def redact_item(key: Any, item: Any) -> Any:
    """The value of `key` as it may be shown: *** when the key names a secret, else `redact_tree(item)`."""
    if isinstance(key, str) and secret_key(key) and item not in (None, ""):
        return MASK
    return redact_tree(item)


def _redact_uri(match: re.Match[str]) -> str:
    scheme, userinfo, rest, query = match.groups()
    if query:
        query = "?" + _QUERY_VALUE.sub("=" + MASK, query[1:])
    return f"{scheme}{MASK + '@' if userinfo else ''}{rest}{query or ''}"


def _environment() -> list[tuple[str, str]]:
    """os.environ's items, read safely while another thread sets or unsets a variable (MLflow's telemetry does, in
    Ray Tune trials): reading os.environ.items() then can raise KeyError, and listing its names RuntimeError."""
    for _ in range(100):
        try:
            names = list(os.environ)
        except RuntimeError:  # the mapping changed size while its names were listed
            continue
        return [(name, value) for name in names if (value := os.environ.get(name)) is not None]
    raise RuntimeError("the environment kept changing while julnet read it for secrets to redact")


def _environment_secrets() -> list[str]:
    """Values of secret-named environment variables, longest first (so a value containing another goes whole)."""
    found = {value for name, value in _environment() if secret_key(name) and len(value) >= MIN_SECRET_CHARS}
    return sorted(found, key=len, reverse=True)
