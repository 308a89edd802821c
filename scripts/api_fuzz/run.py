"""Seeds a running integration service and runs schemathesis against it.

`cargo xtask api-fuzz` starts the service (with the simulators behind it)
and calls this with the venv's Python; it can also be run by hand against
a service you started:

    target/api-fuzz/venv/bin/python scripts/api_fuzz/run.py \\
        --url http://127.0.0.1:8080 --token "$ADMIN_TOKEN"

It creates one integration per provider (Salesforce, HubSpot, Pipedrive,
with the simulators' credentials), a contact with a social profile, a lead
and a conversation in each, writes their ids to a JSON file for
`hooks.py`, then runs `st run` on the service's own `/openapi.json` with
every check. The exit code is schemathesis's (0: no failure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent

# What the simulators accept (examples/integration-service/src/sims.rs).
CREDENTIALS = {
    "salesforce": {
        "clientId": "your_client_id",
        "clientSecret": "your_client_secret",
        "refreshToken": "your_refresh_token",
        "domain": "https://fuzz.my.salesforce.com",
    },
    "hubspot": {"accessToken": "your_access_token"},
    "pipedrive": {"apiToken": "your_api_token", "domain": "fuzz"},
}

# Every check schemathesis has: server errors, status codes, content
# types, headers and bodies against the document, positive and negative
# data, auth, methods and the stateful ones.
CHECKS = "all"


class SeedError(Exception):
    pass


def call(session: requests.Session, method: str, url: str, body=None) -> dict:
    r = session.request(method, url, json=body, timeout=30)
    if r.status_code >= 300:
        raise SeedError(f"{method} {url} answered {r.status_code}: {r.text[:500]}")
    return r.json()


def seed(base: str, token: str) -> dict:
    """The integrations and records the hooks hand to the fuzzer."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    api = f"{base}/api/crm/integrations"
    existing = {i["name"]: i for i in call(s, "GET", api)["integrations"]}
    out: dict = {"credentials": CREDENTIALS, "integrations": {}}
    for provider, creds in CREDENTIALS.items():
        name = f"fuzz-{provider}"
        integ = existing.get(name) or call(
            s,
            "POST",
            api,
            {"provider": provider, "name": name, "credentials": creds},
        )
        iid = integ["id"]
        email = f"fuzz.seed.{provider}@example.com"
        contact = call(
            s,
            "POST",
            f"{api}/{iid}/contacts/sync",
            {
                "email": email,
                "firstName": "Fuzz",
                "lastName": "Seed",
                "phone": "+14155550100",
                "socialProfiles": [
                    {
                        "platform": "twitter",
                        "username": "fuzzseed",
                        "url": "https://twitter.com/fuzzseed",
                        "followers": 1200,
                        "engagement": 40,
                    }
                ],
            },
        )
        lead = call(
            s,
            "POST",
            f"{api}/{iid}/leads/sync",
            {
                "email": f"fuzz.lead.{provider}@example.com",
                "lastName": "Lead",
                "company": "Fuzz Inc",
                "source": "twitter_dm",
            },
        )
        conversation = f"fuzz-conversation-{provider}"
        call(
            s,
            "POST",
            f"{api}/{iid}/events",
            {
                "type": "conversation_created",
                "conversationId": conversation,
                "platform": "twitter",
                "email": email,
                "name": "Fuzz Seed",
                "username": "fuzzseed",
            },
        )
        out["integrations"][iid] = {
            "provider": provider,
            "contactId": contact["recordId"],
            "leadId": lead["recordId"],
            "conversationId": conversation,
        }
        print(f"api-fuzz: {provider} integration {iid}", file=sys.stderr)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the service's base URL, http://127.0.0.1:PORT")
    p.add_argument("--token", required=True, help="an admin token of the service")
    p.add_argument("--max-examples", type=int, default=50, help="test cases per operation and phase")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed (random when absent)")
    p.add_argument("--workers", default="2", help="concurrent schemathesis workers")
    p.add_argument("--report-dir", default=None, help="where the JUnit report goes")
    p.add_argument(
        "--work-dir",
        default=str(HERE.parents[1] / "target" / "api-fuzz"),
        help="where schemathesis and hypothesis keep their caches (default target/api-fuzz)",
    )
    p.add_argument("st_args", nargs="*", help="more arguments for `st run` (after --)")
    a = p.parse_args()
    base = a.url.rstrip("/")
    try:
        data = seed(base, a.token)
    except (SeedError, requests.RequestException) as e:
        print(f"api-fuzz: seeding the service failed: {e}", file=sys.stderr)
        return 2
    fd, data_file = tempfile.mkstemp(prefix="api-fuzz-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    env = dict(os.environ)
    env["API_FUZZ_DATA"] = data_file
    env["SCHEMATHESIS_HOOKS"] = str(HERE / "hooks.py")
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st),
        "run",
        f"{base}/openapi.json",
        "--header",
        f"Authorization: Bearer {a.token}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(a.max_examples),
        "--workers",
        str(a.workers),
        "--generation-database",
        "none",
        "--no-color",
    ]
    if a.seed is not None:
        cmd += ["--seed", str(a.seed)]
    if a.report_dir:
        cmd += ["--report", "junit", "--report-dir", a.report_dir]
    cmd += a.st_args
    shown = [c if not c.startswith("Authorization:") else "Authorization: Bearer ***" for c in cmd]
    print("+ " + " ".join(shown), file=sys.stderr, flush=True)
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.call(cmd, env=env, cwd=work)
    finally:
        os.unlink(data_file)


if __name__ == "__main__":
    sys.exit(main())
