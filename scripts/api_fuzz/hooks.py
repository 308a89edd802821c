"""Schemathesis hooks for the integration service's API fuzz run.

`run.py` creates one integration per provider and a few records in each
(a contact with a social profile, a lead, a conversation) before the run,
and names them in the JSON file `API_FUZZ_DATA`. These hooks feed them to
the generated requests, so that the fuzzer gets past the lookups (an
unknown integration, contact or lead is a 404) and reaches the CRM calls:

- the `id` path parameter is one of the three integrations' ids, or now
  and then the generated value (the 404 answer is exercised too);
- `POST /api/crm/integrations` gets the simulators' credentials for the
  provider it names (the document cannot describe which secrets a CRM
  accepts; a request with others is refused with 422, by design);
- `contactId`, `leadId` and `conversationId` in request bodies are, most
  of the time, the records made for the chosen integration, and the
  enrichment's optional `provider` is that integration's.

`filter_failure` drops the few failures that are the service's design
rather than a mismatch with the document; each is narrow and explained
where it is defined (`_batch_item_failed`, `_semantic_422`,
`_other_resource_404`), and docs/api-fuzzing.md lists them.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from typing import Any

import schemathesis
from hypothesis import strategies as st

_DATA: dict[str, Any] = {}
if os.environ.get("API_FUZZ_DATA"):
    with open(os.environ["API_FUZZ_DATA"], encoding="utf-8") as f:
        _DATA = json.load(f)

# {integration id: {"provider", "contactId", "leadId", "conversationId"}}
_INTEGRATIONS: dict[str, dict[str, str]] = _DATA.get("integrations", {})
# {provider: credentials the simulators accept}
_CREDENTIALS: dict[str, dict[str, str]] = _DATA.get("credentials", {})

# Schema-valid requests the service refuses with 422 for a rule that JSON
# Schema cannot state (or can only with a `not` that utoipa does not
# emit): (method, path template) -> the `error.field` values of such a 422.
ACCEPTED_SEMANTIC_422: dict[tuple[str, str], set[str]] = {
    # `includeSocialData: false` with `includeEngagementHistory: false`
    # asks for nothing: refused, naming `includeSocialData`; a `provider`
    # other than the integration's is refused, naming `provider` (`map_case`
    # below sets it right for the seeded integrations, not for the ones
    # the stateful phase creates).
    ("POST", "/api/crm/integrations/{id}/contacts/enrich"): {"includeSocialData", "provider"},
}


# Salesforce's error codes for its own data rules (see `_semantic_422`; the
# service passes the CRM's message on, as `CODE: text`).
SALESFORCE_DATA_LIMITS = (
    "REQUIRED_FIELD_MISSING:",
    "STRING_TOO_LONG:",
    # A lead `status` that is not in Salesforce's Lead Status picklist
    # (the document says the CRM's own values are passed on).
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:",
)


def _pick(value: Any, salt: str) -> int:
    """A stable small number from a generated value, to choose with."""
    return zlib.crc32(f"{salt}:{value!r}".encode())


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    if not _INTEGRATIONS or not isinstance(path_parameters, dict) or "id" not in path_parameters:
        return st.just(path_parameters)
    choices = [*_INTEGRATIONS, path_parameters["id"]]
    return st.sampled_from(choices).map(lambda i: {**path_parameters, "id": i})


def _replace(body: dict, key: str, value: str | None, salt: str) -> None:
    """Sets `body[key]` to `value` three times in four.

    Only a generated value that is already valid (a non-blank string) is
    replaced: a negative case whose broken part is this field stays broken.
    """
    if value is None or not isinstance(body.get(key), str) or not body[key].strip():
        return
    if _pick(body[key], salt) % 4 != 0:
        body[key] = value


@schemathesis.hook
def map_case(context, case):
    body = case.body
    if not isinstance(body, dict):
        return case
    path = case.operation.path
    method = case.method.upper()
    if method == "POST" and path == "/api/crm/integrations":
        creds = body.get("credentials")
        provider = body.get("provider")
        if (
            isinstance(creds, dict)
            and all(isinstance(v, str) for v in creds.values())
            and isinstance(provider, str)
            and provider in _CREDENTIALS
        ):
            body["credentials"] = dict(_CREDENTIALS[provider])
        return case
    record = _INTEGRATIONS.get(str((case.path_parameters or {}).get("id")))
    if record is None:
        return case
    if path.endswith("/contacts/enrich"):
        _replace(body, "contactId", record.get("contactId"), "contact")
        if isinstance(body.get("provider"), str) and body["provider"] in _CREDENTIALS:
            body["provider"] = record["provider"]
    elif path.endswith("/leads/attribution"):
        _replace(body, "leadId", record.get("leadId"), "lead")
    elif path.endswith("/events"):
        _replace(body, "leadId", record.get("leadId"), "lead")
        _replace(body, "conversationId", record.get("conversationId"), "conversation")
    return case


def _json(response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, TypeError):
        return None


def _batch_item_failed(case, response) -> bool:
    """A negative batch accepted with 200 whose bad items were refused.

    `contacts/batch-sync` checks each item on its own (see the
    `ContactBatch` schema): an item with a wrong value fails alone, in its
    `results` entry, and the batch answers 200. So a schema-violating
    batch is "accepted"; the failure is dropped only when the answer does
    report a failed item (the bad one), so a batch that wrote an invalid
    item without a word still fails the run.
    """
    if not case.operation.path.endswith("/contacts/batch-sync") or response.status_code != 200:
        return False
    answer = _json(response)
    return isinstance(answer, dict) and isinstance(answer.get("failed"), int) and answer["failed"] > 0


def _error(response) -> dict:
    answer = _json(response)
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, dict) else {}


def _semantic_422(case, response) -> bool:
    if response.status_code != 422:
        return False
    error = _error(response)
    fields = ACCEPTED_SEMANTIC_422.get((case.method.upper(), case.operation.path), set())
    if "field" in error and error["field"] in fields:
        return True
    # Salesforce refuses a Contact without `LastName`, a Lead without
    # `LastName` and `Company`, an `Email` over 80 characters and a Lead
    # Status outside its picklist; the schema is shared by the three CRMs,
    # so it can only say so in words.
    # The service answers them as `crm_rejected`, naming the request field
    # when Salesforce names its own. Other Salesforce errors (a malformed
    # query, an unknown field) still fail the run.
    message = str(error.get("message", ""))
    return error.get("kind") == "crm_rejected" and message.startswith(SALESFORCE_DATA_LIMITS)


# The 404 of an integration that does not exist (service.rs `integration`).
_NO_INTEGRATION = "no integration with this id in your workspace"


def _other_resource_404(response) -> bool:
    """A 404 about something else than the integration just created.

    `ensure_resource_availability` (ST302) creates an integration and
    calls an operation on it; that operation may answer 404 for another
    resource the request names (a contact without social data, a lead the
    CRM does not have, a conversation never seen). Only the integration's
    own 404 is a failure.
    """
    return response.status_code == 404 and _error(response).get("message") != _NO_INTEGRATION


_SHOW_FILTERED = bool(os.environ.get("API_FUZZ_SHOW_FILTERED"))


def _dropped(code: str, case, response, why: str) -> bool:
    if _SHOW_FILTERED:
        print(
            f"api-fuzz: dropped {code} on {case.method.upper()} {case.operation.path} "
            f"({response.status_code}, {why}): {response.content[:300]!r}",
            file=sys.stderr,
        )
    return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps a failure unless it is one of the designed behaviours.

    With `API_FUZZ_SHOW_FILTERED=1` each dropped failure is printed.
    """
    code = getattr(failure, "code", None)
    if code == "ST201" and _batch_item_failed(case, response):
        return _dropped(code, case, response, "batch item failed alone")
    if code == "ST202" and _semantic_422(case, response):
        return _dropped(code, case, response, "rule the schema cannot state")
    if code == "ST302" and _other_resource_404(response):
        return _dropped(code, case, response, "404 of another resource")
    return True
