"""Schemathesis hooks for `cargo xtask fuzz`: what an OpenAPI document cannot say.

- Credentials. Every request runs as an admin, so the admin operations are
  fuzzed too. The fuzzer signs out, deletes and demotes accounts, its own
  among them; whenever its token stops working (a 401), the admin is signed
  up again if it was deleted, promoted with `waiter admin create`, and signed
  in again, and the request is replayed.
- Formats. `isbn` values get a correct check digit, and `date` values are not
  after yesterday (UTC): a book's publication date must not be in the future.
  No JSON Schema keyword states either rule; the document says them in words.
- Entity tags. Schemathesis's coverage phase narrows header values to
  letters and digits unless their `format` has a generator; `If-Match` values
  are quoted, so its `entity-tag` format gets one, from the document's own
  pattern.
- Idempotency keys. A client sends a fresh key with each new request; a key
  the generator happens to repeat with another body would rightly get a 422.
- A conversation's generation is its reply in progress, which exists only
  while one is: right after a conversation is created, stopping it answers
  404, as the API promises. The stateful phase reads that 404 as the created
  conversation gone missing (ST302); that one failure is dropped, for that
  operation and that problem only. (A per-operation `enabled = false` in
  schemathesis.toml does not reach the stateful phase.)

The server's address, binary and data directory come from the environment
that `cargo xtask fuzz` sets.
"""

import datetime
import os
import re
import subprocess
import time
import traceback
import uuid

import requests
import schemathesis
from hypothesis import strategies as st

URL = os.environ["WAITER_FUZZ_URL"]
EMAIL = "fuzz-admin-{}@example.com"
PASSWORD = os.environ["WAITER_ADMIN_PASSWORD"]


class WrongPassword(Exception):
    """The admin's email belongs to an account with another password."""


@schemathesis.auth()
class Admin:
    """A bearer token of the fuzzing admin, renewed whenever a request answers 401.

    The fuzzer may delete the admin and then give its email to another
    account (a stateful test reuses emails it has seen), whose password the
    hook cannot know: a sign-in refused with 401 moves on to a fresh email.
    """

    def __init__(self):
        self.generation = 0

    def get(self, case, context):
        # A 503 (with Retry-After) asks a client to come back; so does a busy
        # database for `waiter admin create`. Retry as a client would.
        # Schemathesis reports only that the fetch failed, so each failure's
        # cause is written to the hook log `cargo xtask fuzz` names.
        for attempt in range(5):
            try:
                return self._sign_in_as_admin()
            except Exception as error:
                if isinstance(error, WrongPassword):
                    self.generation += 1
                with open(os.environ["WAITER_FUZZ_HOOK_LOG"], "a") as log:
                    log.write(f"sign-in attempt {attempt + 1} failed:\n{traceback.format_exc()}\n")
                if attempt == 4:
                    raise
                time.sleep(1)

    def _sign_in_as_admin(self):
        email = EMAIL.format(self.generation)
        sign_up = requests.post(
            f"{URL}/api/v1/accounts",
            json={"email": email, "password": PASSWORD, "display_name": "Fuzzer"},
            timeout=30,
        )
        if sign_up.status_code not in (201, 409):
            raise RuntimeError(f"sign-up answered {sign_up.status_code}: {sign_up.text}")
        promote = subprocess.run(
            [os.environ["WAITER_FUZZ_BIN"], "admin", "create", "--email", email],
            capture_output=True,
            text=True,
        )
        if promote.returncode != 0:
            raise RuntimeError(f"`waiter admin create` failed: {promote.stderr}")
        sign_in = requests.post(
            f"{URL}/api/v1/sessions",
            json={"email": email, "password": PASSWORD},
            timeout=30,
        )
        if sign_in.status_code == 401:
            raise WrongPassword(f"{email} has another password now: {sign_in.text}")
        if sign_in.status_code != 201:
            raise RuntimeError(f"sign-in answered {sign_in.status_code}: {sign_in.text}")
        return sign_in.json()["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def isbn13(digits):
    total = sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits))
    return digits + [(10 - total % 10) % 10]


def isbn10(digits):
    total = sum(d * w for d, w in zip(digits, range(10, 1, -1)))
    check = (11 - total % 11) % 11
    return "".join(map(str, digits)) + ("X" if check == 10 else str(check))


def hyphenated(text):
    return f"{text[:3]}-{text[3:6]}-{text[6:-1]}-{text[-1]}"


DIGITS = st.lists(st.integers(0, 9), min_size=12, max_size=12)
ISBN13 = DIGITS.map(isbn13).map(lambda digits: "".join(map(str, digits)))
ISBN10 = DIGITS.map(lambda digits: isbn10(digits[:9]))
schemathesis.openapi.format(
    "isbn", st.one_of(ISBN13, ISBN10, ISBN13.map(hyphenated), ISBN10.map(hyphenated))
)

YESTERDAY = datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)
schemathesis.openapi.format("date", st.dates(max_value=YESTERDAY).map(datetime.date.isoformat))

def header_pattern(name):
    """The pattern the document gives the header `name`."""
    document = requests.get(f"{URL}/openapi.json", timeout=30).json()
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "header" and parameter["name"] == name:
                    return parameter["schema"]["pattern"]
    raise LookupError(f"no operation takes the header {name}")


schemathesis.openapi.format("entity-tag", st.from_regex(header_pattern("If-Match"), fullmatch=True))

IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def map_case(context, case):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    return case


GENERATION = "DELETE /api/v1/conversations/{id}/generation"


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure but the 404 of stopping a reply that is not in
    progress, read as "created resource not found" (see the module doc)."""
    not_in_progress = (
        case.operation.label == GENERATION
        and failure.code == "ST302"
        and response.status_code == 404
        and "no reply is in progress" in response.text
    )
    return not not_in_progress
