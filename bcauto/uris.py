"""Storage and tracking URIs shown to people: passwords never appear in logs, params or tags."""

import re


def redact_uri(uri: str | None) -> str:
    """``uri`` with any password replaced by ``***``."""
    if not uri:
        return ""
    return re.sub(r"(?<=://)([^:/@]+):(.*)@(?=[^@]*$)", r"\1:***@", uri)
