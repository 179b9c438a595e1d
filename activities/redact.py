"""Secret redaction for anything read from the subject (logs) before it leaves the worker.

Evidence becomes an activity result (so it is stored in Temporal's event history) and part of Claude's prompt:
both are outside the worker's trust boundary. Redaction errs on the side of hiding too much: a diagnosis loses
nothing when `client-cert-auth=[REDACTED]`, while a leaked token is a security incident.
"""

from __future__ import annotations

import os
import re

REDACTED = "[REDACTED]"

# Names that announce a secret value: PASSWORD, db_passwd, AWS_SECRET_ACCESS_KEY, api-key, X-Auth-Token, ...
_SECRET_NAME = (r"[A-Za-z0-9_.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
                r"|private[_-]?key|credential|auth)[A-Za-z0-9_.-]*")
# A value: an earlier redaction (so redacting twice is harmless), quoted (also with the backslash-escaped quotes
# of JSON log lines) or bare up to a separator.
_VALUE = r"""(?:\[REDACTED\]|\\?"(?:[^"\\]|\\(?!"))*\\?"|\\?'(?:[^'\\]|\\(?!'))*\\?'|[^\s,;&"'\\}\]]+)"""

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
     f"{REDACTED} (private key)"),
    # Authorization headers (the scheme stays, it helps a diagnosis; the credential goes).
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {REDACTED}"),
    # Well-known token shapes, wherever they appear.
    (re.compile(r"\bsk-ant-[A-Za-z0-9_-]{6,}"), REDACTED),  # Anthropic
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), REDACTED),  # OpenAI-style
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key id
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),  # GitHub
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),  # Slack
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}"), REDACTED),  # JWT
    # user:password@ in URLs.
    (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), rf"\1:{REDACTED}@"),
    # KEY=value, key: value, "key":"value" where the key's name says it is secret.
    (re.compile(rf"""(?i)(["']?\b{_SECRET_NAME}\\?["']?\s*[:=]\s*){_VALUE}"""), rf"\1{REDACTED}"),
]

_MIN_ENV_SECRET = 8  # shorter values ("1", "true") would redact half of every log


def _env_secrets() -> list[str]:
    """The worker's own secrets (its API key above all), redacted verbatim wherever they show up."""
    name = re.compile(rf"(?i)^{_SECRET_NAME}$")
    values = {v for k, v in os.environ.items() if name.match(k) and len(v) >= _MIN_ENV_SECRET}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    for value in _env_secrets():
        text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
