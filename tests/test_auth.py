from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import stat
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from http_fixtures import (  # noqa: F401  (fixtures)
    APP,
    GRAPH,
    LOGIN,
    TEAMS_RESOURCE,
    TENANT,
    clean_env_fixture,
    make_jwt,
    rsps_fixture,
)

from bridge.auth import (
    build_token_provider,
    decode_claims,
    load_certificate,
)
from bridge.errors import AuthError, ConfigError, LoginUnreachableError
from bridge.settings import Settings

pytestmark = pytest.mark.usefixtures("clean_env")

AUTHORITY = f"{LOGIN}/{TENANT}"
TOKEN_URL = f"{AUTHORITY}/oauth2/v2.0/token"
SECRET = "Zq8~not-a-real-secret-value"


def settings(**overrides: Any) -> Settings:
    base = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": APP, "AZURE_AUTHORITY_HOST": LOGIN}
    return Settings.load(env_file=None, overrides={**base, **overrides})


def mock_metadata(rsps) -> None:
    rsps.get(
        f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
        json={
            "token_endpoint": TOKEN_URL,
            "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/devicecode",
            "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        },
    )


def token_answer(resource: str) -> dict[str, Any]:
    access = make_jwt(aud=resource, tid=TENANT, appid=APP, roles=[], wids=[])
    return {"token_type": "Bearer", "expires_in": 3599, "access_token": access}


def form(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.body).items()}


def token_calls(rsps) -> list[Any]:
    return [c for c in rsps.calls if c.request.url == TOKEN_URL]


def test_secret_flow_posts_the_secret_and_caches_per_resource(rsps):
    mock_metadata(rsps)
    rsps.post(TOKEN_URL, json=token_answer(TEAMS_RESOURCE))
    provider = build_token_provider(settings(AZURE_CLIENT_SECRET=SECRET))
    assert provider.kind == "secret"
    first = provider.get_token(TEAMS_RESOURCE)
    assert provider.get_token(TEAMS_RESOURCE) == first  # MSAL's cache: no second request
    assert decode_claims(first)["aud"] == TEAMS_RESOURCE
    (call,) = token_calls(rsps)
    body = form(call)
    assert body["grant_type"] == "client_credentials"
    assert body["client_id"] == APP
    assert body["scope"] == f"{TEAMS_RESOURCE}/.default"
    assert body["client_secret"] == SECRET
    assert "client_assertion" not in body


def make_certificate(tmp_path, *, pfx_password: bytes | None = None) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "teams-bridge test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    sha256 = cert.fingerprint(hashes.SHA256()).hex().upper()
    if pfx_password is not None:
        path = tmp_path / "app.pfx"
        path.write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"app", key, cert, None, serialization.BestAvailableEncryption(pfx_password)
            )
        )
        return str(path), sha256
    path = tmp_path / "app.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return str(path), sha256


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_certificate_flow_sends_a_signed_assertion(rsps, tmp_path):
    path, sha256 = make_certificate(tmp_path)
    mock_metadata(rsps)
    rsps.post(TOKEN_URL, json=token_answer(GRAPH))
    provider = build_token_provider(settings(AZURE_CLIENT_CERTIFICATE_PATH=path))
    assert provider.kind == "certificate"
    provider.get_token(GRAPH)
    body = form(token_calls(rsps)[0])
    assert "client_secret" not in body
    assert body["scope"] == f"{GRAPH}/.default"
    assert body["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt_part(body["client_assertion"], 0)
    thumb = base64.urlsafe_b64decode(header["x5t#S256"] + "==").hex().upper()
    assert thumb == sha256
    assert jwt_part(body["client_assertion"], 1)["iss"] == APP
    assert provider.thumbprint == sha256


def test_pfx_with_password_loads_and_wrong_password_names_the_variable(tmp_path):
    path, sha256 = make_certificate(tmp_path, pfx_password=b"pfx-pass-42")
    key_pem, cert_pem, thumb256, thumb1 = load_certificate(path, "pfx-pass-42")
    assert "PRIVATE KEY" in key_pem and "CERTIFICATE" in cert_pem
    assert thumb256 == sha256 and len(thumb1) == 40
    with pytest.raises(ConfigError) as err:
        load_certificate(path, "wrong-password-9")
    assert "AZURE_CLIENT_CERTIFICATE_PASSWORD" in str(err.value)
    assert "wrong-password-9" not in str(err.value)


def test_pem_without_certificate_is_a_config_error(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key-only.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match=r"AZURE_CLIENT_CERTIFICATE_PATH=.*no certificate"):
        build_token_provider(settings(AZURE_CLIENT_CERTIFICATE_PATH=str(path)))


def _self_signed(key: Any, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def _pem(*items: Any) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


def test_a_pem_chain_with_the_ca_first_gives_the_apps_thumbprint(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app, ca = _self_signed(key, "app"), _self_signed(ca_key, "ca")
    path = tmp_path / "chain.pem"
    path.write_bytes(_pem(ca, app, key))
    _, cert_pem, sha256, _ = load_certificate(str(path))
    assert sha256 == app.fingerprint(hashes.SHA256()).hex().upper()
    assert cert_pem == app.public_bytes(serialization.Encoding.PEM).decode()


def test_a_pem_whose_certificates_do_not_match_the_key_is_a_config_error(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "mismatch.pem"
    path.write_bytes(_pem(key, _self_signed(other, "someone else")))
    with pytest.raises(ConfigError, match=r"AZURE_CLIENT_CERTIFICATE_PATH=.*belongs to its"):
        load_certificate(str(path))


def test_federated_token_file_is_read_on_every_acquisition(rsps, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("federated-assertion-one\n")
    mock_metadata(rsps)
    rsps.post(TOKEN_URL, json=token_answer(TEAMS_RESOURCE))
    rsps.post(TOKEN_URL, json=token_answer(GRAPH))
    provider = build_token_provider(settings(AZURE_FEDERATED_TOKEN_FILE=str(token_file)))
    assert provider.kind == "federated"
    provider.get_token(TEAMS_RESOURCE)
    token_file.write_text("federated-assertion-two\n")  # the platform rotated it
    provider.get_token(GRAPH)
    first, second = (form(c) for c in token_calls(rsps))
    assert first["client_assertion"] == "federated-assertion-one"
    assert second["client_assertion"] == "federated-assertion-two"
    assert "client_secret" not in first


def test_failed_acquisition_names_credential_and_code_without_the_secret(rsps, caplog):
    mock_metadata(rsps)
    rsps.post(
        TOKEN_URL,
        status=401,
        json={
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            f"secret being sent in the request is the client secret value. {SECRET}\r\n"
            "Trace ID: x",
            "error_codes": [7000215],
        },
    )
    provider = build_token_provider(settings(AZURE_CLIENT_SECRET=SECRET))
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as err:
        provider.get_token(TEAMS_RESOURCE)
    message = str(err.value)
    assert "secret credential" in message and APP in message
    assert "AADSTS7000215" in message and "the Teams admin API" in message
    assert "check AZURE_CLIENT_SECRET" in message
    assert SECRET not in message
    assert SECRET not in caplog.text


def test_unreachable_authority_is_an_auth_error(rsps):
    rsps.get(f"{AUTHORITY}/v2.0/.well-known/openid-configuration", status=404, body="nope")
    provider = build_token_provider(settings(AZURE_CLIENT_SECRET=SECRET))
    with pytest.raises(AuthError, match="could not get a token for Graph"):
        provider.get_token(GRAPH)


@pytest.mark.parametrize(
    ("failure", "why"),
    [
        (
            requests.ConnectionError("HTTPSConnectionPool(host='x', port=1): [Errno 111] refused"),
            "the connection was refused",
        ),
        (requests.ReadTimeout("Read timed out. (read timeout=3.0)"), "did not answer in time"),
    ],
)
def test_a_login_endpoint_that_does_not_answer_is_named_with_what_to_check(rsps, failure, why):
    """Not urllib3's text: the login host, why, and what to check (the credential was not
    tried, so it is not what to fix)."""
    rsps.get(f"{AUTHORITY}/v2.0/.well-known/openid-configuration", body=failure)
    provider = build_token_provider(settings(AZURE_CLIENT_SECRET=SECRET))
    with pytest.raises(LoginUnreachableError) as err:
        provider.get_token(GRAPH)
    message = str(err.value)
    assert message.startswith(f"could not reach the login endpoint {AUTHORITY.rsplit('/', 1)[0]}")
    assert why in message and "AZURE_AUTHORITY_HOST" in message and "HTTPS_PROXY" in message
    assert "HTTPSConnectionPool" not in message and "Errno" not in message


def test_persistent_cache_is_private_and_reused(rsps, tmp_path):
    cache = tmp_path / "tokens.json"
    mock_metadata(rsps)
    rsps.post(TOKEN_URL, json=token_answer(TEAMS_RESOURCE))
    conf = settings(AZURE_CLIENT_SECRET=SECRET, BRIDGE_TOKEN_CACHE=str(cache))
    token = build_token_provider(conf).get_token(TEAMS_RESOURCE)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert SECRET not in cache.read_text()
    mock_metadata(rsps)  # a second run builds its application again, but asks for no token
    assert build_token_provider(conf).get_token(TEAMS_RESOURCE) == token
    assert len(token_calls(rsps)) == 1


def test_device_code_prompt_goes_to_the_callback(rsps):
    mock_metadata(rsps)
    rsps.post(
        f"{AUTHORITY}/oauth2/v2.0/devicecode",
        json={
            "device_code": "dc",
            "user_code": "ABCD-EFGH",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
            "interval": 1,
            "message": "To sign in, use a web browser to open the page and enter ABCD-EFGH.",
        },
    )
    rsps.post(TOKEN_URL, json=token_answer(TEAMS_RESOURCE))
    prompts: list[str] = []
    provider = build_token_provider(settings(BRIDGE_AUTH="device_code"), prompt=prompts.append)
    provider.get_token(TEAMS_RESOURCE)
    assert prompts == ["To sign in, use a web browser to open the page and enter ABCD-EFGH."]
    body = form(token_calls(rsps)[0])
    assert body["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code"


def test_device_code_without_a_terminal_is_a_config_error(rsps):
    mock_metadata(rsps)
    provider = build_token_provider(settings(BRIDGE_AUTH="device_code"))
    with pytest.raises(ConfigError, match="interactive terminal"):
        provider.get_token(TEAMS_RESOURCE)


def test_decode_claims_rejects_non_jwt():
    assert decode_claims(make_jwt(tid=TENANT, wids=["x"]))["wids"] == ["x"]
    with pytest.raises(AuthError, match="not a JWT"):
        decode_claims("opaque-token")


def test_token_requests_use_the_configured_ca(rsps, monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    mock_metadata(rsps)
    rsps.post(TOKEN_URL, json=token_answer(GRAPH))
    provider = build_token_provider(
        settings(AZURE_CLIENT_SECRET=SECRET, REQUESTS_CA_BUNDLE=str(ca))
    )
    provider.get_token(GRAPH)
    assert {c.request.req_kwargs["verify"] for c in rsps.calls} == {str(ca)}


def test_msal_requests_count_with_the_http_clients_requests(rsps):
    """``-v`` and the read's log line report what was sent: MSAL's authority discovery and
    token requests go through its own session, which tells the HTTP client."""
    import gc

    from bridge.http import HttpClient, HttpOptions

    mock_metadata(rsps)
    rsps.post(TOKEN_URL, json=token_answer(TEAMS_RESOURCE))
    rsps.get(f"{GRAPH}/v1.0/organization", json={"value": []})
    provider = build_token_provider(settings(AZURE_CLIENT_SECRET=SECRET))
    client = HttpClient(provider, HttpOptions())
    client.get_json(f"{GRAPH}/v1.0/organization", resource=TEAMS_RESOURCE)
    stats = client.stats
    assert stats["total"] == len(rsps.calls) == 3
    assert stats["routes"] == {
        "GET /{id}/v2.0/.well-known/openid-configuration": 1,
        "POST /{id}/oauth2/v2.0/token": 1,
        "GET /v1.0/organization": 1,
    }
    # A client that is gone is no longer told, nor kept alive by the provider.
    del client
    gc.collect()
    assert [o.alive for o in provider._observers] == [False]
