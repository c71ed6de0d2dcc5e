"""schemathesis hooks for scripts/api-fuzz.sh.

An Idempotency-Key is, by its documented meaning, unique per request: the same key on another
request is refused (422 idempotency_key_reused), which no schema can say. A valid generated key
is therefore replaced by a fresh one; invalid ones (the negative cases) are left as generated.
"""
import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def map_headers(ctx, headers):
    if headers:
        for name in list(headers):
            value = headers[name]
            if name.lower() == "idempotency-key" and isinstance(value, str) and VALID_KEY.fullmatch(value):
                headers[name] = str(uuid.uuid4())
    return headers
