"""synadm, the command-line admin tool operators already use, drives Feldpost's admin API: user and
registration-token operations. The first admin comes from `feldpost admin` on the data directory
of the running server."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

ADMIN_PASSWORD = "synadm admin password"


def _http(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _login(server, user, password):
    return _http(
        "POST",
        server.url + "/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password},
    )


@pytest.fixture
def synadm(server, tmp_path):
    """Runs synadm non-interactively against the server as a freshly created admin."""
    binary = os.environ.get("FELDPOST_BIN", "target/debug/feldpost")
    created = subprocess.run(
        [binary, "admin", "--config", server.config, "--data-dir", os.path.join(server.data_dir, "data"),
         "user", "create", "ops", "--admin", "--password-stdin"],
        input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )
    assert created.returncode == 0, created.stderr
    status, body = _login(server, "ops", ADMIN_PASSWORD)
    assert status == 200, body
    config = tmp_path / "synadm.yaml"
    config.write_text(
        "\n".join([
            'user: "@ops:localhost"',
            f'token: "{body["access_token"]}"',
            "protocol: http",
            f'base_url: "{server.url}"',
            'admin_path: "/_synapse/admin"',
            'matrix_path: "/_matrix"',
            "timeout: 30",
            "server_discovery: well-known",
            "homeserver: localhost",
            "ssl_verify: false",
            "format: json",
        ]) + "\n"
    )
    # synadm keeps a debug log under $HOME; give it a private one.
    env = dict(os.environ, HOME=str(tmp_path))
    exe = os.path.join(os.path.dirname(sys.executable), "synadm")

    def run(*args, expect_warning=False):
        proc = subprocess.run(
            [exe, "--batch", "--config-file", str(config), "--output", "minified", *args],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert proc.returncode == 0, f"synadm {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        if not expect_warning:
            assert "WARNING" not in proc.stderr, f"synadm {' '.join(args)}: {proc.stderr}"
        # The JSON result is the last line; commands may print notes before it, and a few print
        # only a sentence.
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            return proc.stdout

    run.token = body["access_token"]
    return run


def test_version(synadm):
    assert synadm("version")["server_version"].startswith("Feldpost ")


def test_user_operations(server, synadm):
    # Create with modify, as operators do (synadm first looks the user up: a 404 it warns about).
    created = synadm("user", "modify", "@neo:localhost", "--password", "neo password one",
                     "--display-name", "Neo", expect_warning=True)
    assert created["name"] == "@neo:localhost"
    assert created["displayname"] == "Neo"
    assert _login(server, "neo", "neo password one")[0] == 200

    listed = synadm("user", "list")
    names = [u["name"] for u in listed["users"]]
    assert "@neo:localhost" in names and "@ops:localhost" in names
    assert listed["total"] == len(listed["users"])
    found = synadm("user", "list", "--name", "neo")
    assert [u["name"] for u in found["users"]] == ["@neo:localhost"]
    admins = synadm("user", "list", "--admins")
    assert [u["name"] for u in admins["users"]] == ["@ops:localhost"]

    details = synadm("user", "details", "@neo:localhost")
    assert details["displayname"] == "Neo" and details["admin"] is False

    synadm("user", "modify", "@neo:localhost", "--admin")
    assert synadm("user", "details", "@neo:localhost")["admin"] is True
    synadm("user", "modify", "@neo:localhost", "--no-admin")
    assert synadm("user", "details", "@neo:localhost")["admin"] is False

    assert synadm("user", "password", "@neo:localhost", "--password", "neo password two") == {}
    assert _login(server, "neo", "neo password one")[0] == 403
    assert _login(server, "neo", "neo password two")[0] == 200

    whois = synadm("user", "whois", "@neo:localhost")
    assert whois["user_id"] == "@neo:localhost"
    assert len(whois["devices"]) >= 1

    # Device listing and deletion, through synadm's pruning of devices.
    device = next(iter(whois["devices"]))
    pruned = synadm("user", "prune-devices", "@neo:localhost", "--device-id", device,
                    "--min-surviving", "0", "--timestamp")
    assert [d["device_id"] for d in pruned] == [device]
    assert device not in synadm("user", "whois", "@neo:localhost")["devices"]

    result = synadm("user", "deactivate", "@neo:localhost")
    assert "id_server_unbind_result" in result
    assert synadm("user", "details", "@neo:localhost")["deactivated"] is True
    assert _login(server, "neo", "neo password two")[0] == 403
    assert "@neo:localhost" not in [u["name"] for u in synadm("user", "list")["users"]]
    assert "@neo:localhost" in [u["name"] for u in synadm("user", "list", "--deactivated")["users"]]


def test_registration_token_operations(server, synadm):
    made = synadm("regtok", "new", "--token", "team-alpha", "--uses-allowed", "2")
    assert made == {"token": "team-alpha", "uses_allowed": 2, "pending": 0, "completed": 0, "expiry_time": None}
    generated = synadm("regtok", "new", "--length", "24")
    assert len(generated["token"]) == 24

    tokens = synadm("regtok", "list")["registration_tokens"]
    assert {t["token"] for t in tokens} == {"team-alpha", generated["token"]}

    status, body = _http("POST", server.url + "/_matrix/client/v3/register", {
        "username": "recruit", "password": "recruit password",
        "auth": {"type": "m.login.registration_token", "token": "team-alpha"},
    })
    assert status == 200, body
    assert synadm("regtok", "details", "team-alpha", "--timestamp")["completed"] == 1

    updated = synadm("regtok", "update", "team-alpha", "--uses-allowed", "1")
    assert updated["uses_allowed"] == 1
    invalid = synadm("regtok", "list", "--invalid")["registration_tokens"]
    assert [t["token"] for t in invalid] == ["team-alpha"]
    status, body = _http("POST", server.url + "/_matrix/client/v3/register", {
        "username": "latecomer", "password": "recruit password",
        "auth": {"type": "m.login.registration_token", "token": "team-alpha"},
    })
    assert status == 401 and body["errcode"] == "M_FORBIDDEN", body

    assert synadm("regtok", "update", "team-alpha", "--uses-allowed", "-1")["uses_allowed"] is None
    assert "successfully deleted" in synadm("regtok", "delete", "team-alpha")
    assert {t["token"] for t in synadm("regtok", "list")["registration_tokens"]} == {generated["token"]}


def test_server_notice(server, synadm):
    synadm("user", "modify", "@anna:localhost", "--password", "anna password", expect_warning=True)
    sent = synadm("notice", "send", "@anna:localhost", "Wartung heute Abend")
    assert len(sent) == 1 and sent[0]["event_id"].startswith("$"), sent
    # Anna is invited to her notices room, where the notice waits.
    status, body = _login(server, "anna", "anna password")
    assert status == 200, body
    status, sync = _http("GET", server.url + "/_matrix/client/v3/sync?timeout=0", token=body["access_token"])
    assert status == 200 and len(sync["rooms"]["invite"]) == 1, sync
