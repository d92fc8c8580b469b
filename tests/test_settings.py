from __future__ import annotations

import logging
import os
import re

import pytest
from http_fixtures import clean_env_fixture  # noqa: F401

from bridge.errors import ConfigError
from bridge.settings import CLOUDS, DOTENV_MAX_BYTES, Settings, redact

pytestmark = pytest.mark.usefixtures("clean_env")
GRAPH_COMMERCIAL = "https://graph.microsoft.com"


def test_defaults_are_the_commercial_cloud():
    s = Settings.load()
    assert s.cloud == "commercial"
    assert s.authority_host == "https://login.microsoftonline.com"
    assert s.graph_url == "https://graph.microsoft.com"
    assert s.teams_url == "https://api.interfaces.records.teams.microsoft.com"
    assert s.graph_policy_assignment is True
    assert s.verify is True
    assert (s.concurrency, s.retry_attempts) == (4, 5)


@pytest.mark.parametrize(
    ("cloud", "login", "graph", "teams"),
    [
        (
            "gcc",
            "login.microsoftonline.com",
            "graph.microsoft.com",
            "api.interfaces.records.teams.microsoft.com",
        ),
        (
            "gcchigh",
            "login.microsoftonline.us",
            "graph.microsoft.us",
            "api.interfaces.records.gov.teams.microsoft.us",
        ),
        (
            "dod",
            "login.microsoftonline.us",
            "dod-graph.microsoft.us",
            "api.interfaces.records.dod.teams.microsoft.us",
        ),
    ],
)
def test_sovereign_clouds(monkeypatch, cloud, login, graph, teams):
    monkeypatch.setenv("BRIDGE_CLOUD", cloud)
    s = Settings.load()
    assert (s.authority_host, s.graph_url, s.teams_url) == (
        f"https://{login}",
        f"https://{graph}",
        f"https://{teams}",
    )
    assert s.graph_policy_assignment is False
    assert CLOUDS[cloud].graph_policy_assignment is False


def test_overrides_win_over_environment_and_dotenv(monkeypatch, clean_env):
    (clean_env / ".env").write_text(
        "BRIDGE_CLOUD=gcchigh\nBRIDGE_CONCURRENCY=2\nAZURE_TENANT_ID=from-dotenv\n"
    )
    monkeypatch.setenv("BRIDGE_CONCURRENCY", "3")
    monkeypatch.setenv("BRIDGE_TEAMS_URL", "https://teams.example.test/")
    s = Settings.load(overrides={"BRIDGE_CLOUD": "dod", "retry_attempts": 7, "auth": None})
    assert s.cloud == "dod"  # override over .env
    assert s.concurrency == 3  # environment over .env
    assert s.tenant_id == "from-dotenv"
    assert s.retry_attempts == 7
    assert s.auth == "auto"  # a None override leaves the default
    assert s.teams_url == "https://teams.example.test"  # configured URL wins, slash dropped
    assert s.graph_url == "https://dod-graph.microsoft.us"


def test_no_env_file_when_asked(clean_env):
    (clean_env / ".env").write_text("BRIDGE_CLOUD=gcchigh\n")
    assert Settings.load(env_file=None).cloud == "commercial"


def test_secrets_never_in_repr(monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "sup3r-s3cret-value")
    s = Settings.load()
    assert "sup3r-s3cret-value" not in repr(s)
    assert "sup3r-s3cret-value" not in str(s.model_dump())
    assert s.secrets() == ["sup3r-s3cret-value"]


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("BRIDGE_CLOUD", "azurechina", "BRIDGE_CLOUD='azurechina'"),
        ("BRIDGE_CONCURRENCY", "0", "BRIDGE_CONCURRENCY"),
        ("BRIDGE_AUTH", "password", "BRIDGE_AUTH"),
        (
            "BRIDGE_TEAMS_URL",
            "http://teams.test",
            "BRIDGE_TEAMS_URL (http://teams.test) is not an https URL",
        ),
        ("AZURE_AUTHORITY_HOST", "https://login.test/tenant", "give scheme and host only"),
        ("AZURE_AUTHORITY_HOST", "https://login.test?x=1", "AZURE_AUTHORITY_HOST (https://login"),
        ("AZURE_AUTHORITY_HOST", "https://login.test#frag", "query string or fragment"),
        ("BRIDGE_GRAPH_URL", "https://graph.microsoft.com/v1.0", "without /v1.0"),
        ("BRIDGE_GRAPH_URL", "https://graph.test/beta/", "BRIDGE_GRAPH_URL (https://graph.test/"),
        ("BRIDGE_GRAPH_URL", "https://graph.test?$top=5", "query string or fragment"),
        ("BRIDGE_TEAMS_URL", "https://teams.test/Skype.Policy", "appends /Skype.Policy"),
        ("BRIDGE_TEAMS_URL", "https://teams.test/?a=b", "BRIDGE_TEAMS_URL (https://teams.test"),
        (
            "REQUESTS_CA_BUNDLE",
            "/nonexistent/ca.pem",
            "REQUESTS_CA_BUNDLE='/nonexistent/ca.pem': no such file",
        ),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, env, value, needle):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        Settings.load()
    assert needle in str(err.value)


def test_whitespace_around_tenant_and_client_ids_is_stripped():
    tenant = "11111111-2222-3333-4444-555555555555"
    s = Settings.load(overrides={"AZURE_TENANT_ID": f" {tenant}\t", "AZURE_CLIENT_ID": " app \n"})
    assert (s.tenant_id, s.client_id) == (tenant, "app")
    assert s.authority == f"https://login.microsoftonline.com/{tenant}"
    assert Settings.load(overrides={"AZURE_TENANT_ID": "  "}).tenant_id is None


def test_an_endpoint_of_another_cloud_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="bridge.settings"):
        Settings.load(overrides={"BRIDGE_CLOUD": "gcchigh", "BRIDGE_GRAPH_URL": GRAPH_COMMERCIAL})
    assert "BRIDGE_GRAPH_URL points at graph.microsoft.com" in caplog.text
    assert "BRIDGE_CLOUD=gcchigh" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bridge.settings"):
        Settings.load(overrides={"BRIDGE_CLOUD": "gcc", "BRIDGE_GRAPH_URL": GRAPH_COMMERCIAL})
        Settings.load(overrides={"BRIDGE_GRAPH_URL": "https://127.0.0.1:8443"})
    assert caplog.text == ""


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        Settings.load(overrides={"colour": "blue"})


def test_no_credential_says_which_variables_to_set(monkeypatch):
    monkeypatch.setenv("AZURE_TENANT_ID", "contoso.onmicrosoft.com")
    monkeypatch.setenv("AZURE_CLIENT_ID", "app")
    with pytest.raises(ConfigError) as err:
        Settings.load().credential_kind()
    for var in (
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "BRIDGE_AUTH=device_code",
    ):
        assert var in str(err.value)


def test_certificate_wins_over_secret_and_says_so(monkeypatch, clean_env, caplog):
    cert = clean_env / "app.pem"
    cert.write_text("placeholder")
    monkeypatch.setenv("AZURE_TENANT_ID", "t")
    monkeypatch.setenv("AZURE_CLIENT_ID", "c")
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(cert))
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s3cret-value")
    with caplog.at_level(logging.INFO, logger="bridge.settings"):
        assert Settings.load().credential_kind() == "certificate"
    assert "using the certificate" in caplog.text
    assert "s3cret-value" not in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BRIDGE_AUTH": "secret"}, "BRIDGE_AUTH=secret needs AZURE_CLIENT_SECRET"),
        ({"AZURE_CLIENT_SECRET": "x"}, "AZURE_TENANT_ID and AZURE_CLIENT_ID not set"),
        ({"AZURE_CLIENT_SECRET": "x", "AZURE_TENANT_ID": "t"}, "AZURE_CLIENT_ID not set"),
    ],
)
def test_missing_credential_parts(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        Settings.load().credential_kind()


def test_managed_identity_needs_no_tenant(monkeypatch):
    monkeypatch.setenv("BRIDGE_AUTH", "managed_identity")
    assert Settings.load().credential_kind() == "managed_identity"


def test_password_without_certificate_is_contradictory(monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", "pfx-pass-123")
    with pytest.raises(ConfigError) as err:
        Settings.load()
    assert "AZURE_CLIENT_CERTIFICATE_PATH is not" in str(err.value)
    assert "pfx-pass-123" not in str(err.value)


def test_redact_removes_secrets_and_token_shapes():
    jwt = "eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ4In0.c2ln"
    text = (
        f"Authorization: Bearer abc.def-ghi client_secret=hunter22&x=1 {jwt} "
        '{"access_token": "opaque123"} literal hunter22'
    )
    out = redact(text, ["hunter22"])
    for leaked in ("abc.def-ghi", "hunter22", jwt, "opaque123"):
        assert leaked not in out
    assert "x=1" in out and "Bearer [redacted]" in out


# --------------------------------------------------------------------------- hardening (issue 17)


@pytest.mark.parametrize("var", ["BRIDGE_GRAPH_URL", "BRIDGE_TEAMS_URL", "AZURE_AUTHORITY_HOST"])
@pytest.mark.parametrize(
    "url",
    [
        "https://admin:hunter2-pw@graph.example.test",
        "https://hunter2-pw@graph.example.test",
        "https://admin:hunter2-pw@graph.example.test/v1.0",
        "https:admin:hunter2-pw@graph.example.test",
        "http://admin:hunter2-pw@graph.example.test",
    ],
)
def test_credentials_in_an_endpoint_url_are_refused_without_echoing_them(
    monkeypatch, caplog, var, url
):
    monkeypatch.setenv(var, url)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as err:
        Settings.load()
    message = str(err.value)
    assert f"{var} has a user name or password in it" in message
    assert "graph.example.test" in message or "***" in message
    assert "hunter2" not in message and "admin" not in message
    assert "hunter2" not in caplog.text


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("var", ["BRIDGE_GRAPH_URL", "BRIDGE_TEAMS_URL", "AZURE_AUTHORITY_HOST"])
@pytest.mark.parametrize(
    "tail", ["/?code=S3CRETPW", "#S3CRETPW", "/S3CRETPW/x", ":S3CRETPW", "?S3CRETPW"]
)
def test_an_endpoint_error_never_echoes_more_than_scheme_and_host(monkeypatch, var, tail):
    """A query, fragment, path or port may carry a secret: the error shows scheme and host."""
    monkeypatch.setenv(var, "https://host.test" + tail)
    with pytest.raises(ConfigError) as err:
        Settings.load()
    assert var in str(err.value) and "S3CRETPW" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("https://[::1", "BRIDGE_GRAPH_URL is not a valid URL"),
        ("https://graph.test:99999", "is not a valid URL"),
        ("https://graph.test:port", "is not a valid URL"),
    ],
)
def test_an_endpoint_that_is_not_a_url_is_a_config_error(monkeypatch, url, needle):
    monkeypatch.setenv("BRIDGE_GRAPH_URL", url)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        Settings.load()


def test_an_ipv6_endpoint_with_a_port_is_fine(monkeypatch):
    monkeypatch.setenv("BRIDGE_GRAPH_URL", "https://[::1]:8443")
    assert Settings.load().graph_url == "https://[::1]:8443"


def test_a_dotenv_that_is_not_utf8_names_line_and_column(clean_env):
    (clean_env / ".env").write_bytes(b"BRIDGE_CLOUD=gcc\nAZURE_CLIENT_ID=ab\xffcd\n")
    with pytest.raises(ConfigError) as err:
        Settings.load()
    assert str(err.value).startswith(".env:2:19: the .env file is not UTF-8 text (byte 0xff)")


def test_a_dotenv_with_a_bom_reads(clean_env):
    (clean_env / ".env").write_bytes(b"\xef\xbb\xbfBRIDGE_CLOUD=gcc\n")
    assert Settings.load().cloud == "gcc"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_dotenv_is_a_config_error(clean_env):
    path = clean_env / ".env"
    path.write_text("BRIDGE_CLOUD=gcc\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match=r"\.env: cannot read the \.env file"):
        Settings.load()


def test_an_unreadable_dotenv_via_the_reader(clean_env, monkeypatch):
    # Root reads a mode-0 file, so the OSError is made by hand here.
    import builtins

    real_open = builtins.open

    def deny(path, *args, **kwargs):
        if str(path) == ".env":
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    (clean_env / ".env").write_text("BRIDGE_CLOUD=gcc\n")
    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(ConfigError, match=r"\.env: cannot read the \.env file: Permission denied"):
        Settings.load()


def test_a_huge_dotenv_is_refused_unread(clean_env):
    (clean_env / ".env").write_bytes(b"#" * (DOTENV_MAX_BYTES + 1))
    with pytest.raises(ConfigError, match=r"no \.env file is"):
        Settings.load()


@pytest.mark.parametrize("content", [b"A=\xff\n", b"\xfe\xff\x00A"])
def test_cli_with_a_bad_dotenv_answers_version_and_errors_on_commands(clean_env, capsys, content):
    from bridge.cli import main

    (clean_env / ".env").write_bytes(content)
    for args, code in ((["--version"], 0), (["--help"], 0), (["validate", "x.yaml"], 1)):
        with pytest.raises(SystemExit) as info:
            main(args)
        out, err = capsys.readouterr()
        assert (info.value.code or 0) == code, (args, out, err)
        assert "Traceback" not in err
        if code:
            assert err.startswith("error: .env:1:"), err
            assert "not UTF-8" in err


EXAMPLE_DESIRED = str(
    __import__("pathlib").Path(__file__).parents[1] / "examples" / "northwind.yaml"
)


@pytest.mark.parametrize("command", [["-vv", "doctor"], ["-vv", "plan", EXAMPLE_DESIRED]])
def test_a_password_in_the_graph_url_never_reaches_output_or_logs(monkeypatch, capsys, command):
    from bridge.cli import main

    monkeypatch.setenv("AZURE_TENANT_ID", "t")
    monkeypatch.setenv("AZURE_CLIENT_ID", "c")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("BRIDGE_GRAPH_URL", "https://admin:hunter2-pw@graph.microsoft.com")
    with pytest.raises(SystemExit) as info:
        main(command)
    out, err = capsys.readouterr()
    assert info.value.code == 1
    assert "BRIDGE_GRAPH_URL has a user name or password in it" in out + err
    # -vv logs the error's traceback at debug level by design; the secret is in neither.
    assert "hunter2" not in out + err
