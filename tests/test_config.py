"""Settings and the connections file: what starts, what refuses to, and what the refusal says.

Every refusal names what to fix, never a credential, and `gateway serve` turns
it into one line on stderr and a non-zero exit, not a traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import free_port
from gateway import auth, connections, mapping
from gateway.app import create_app
from gateway.connections import ConfigError, expand_env
from gateway.mapping import MappingError
from gateway.settings import DEMO_API_KEY, SANDBOX_TOKEN, bundled_mappings, from_environ

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = mapping.load_dir(bundled_mappings())
SECRET = "sup3r-s3cret-credential-value"
TOKEN = "tok-very-private-connection-token"

GOOD = f"""\
- token: {TOKEN}
  name: acme-formation
  provider: formation
  base_url: https://formation.test
  credentials:
    api_key: {SECRET}
  context:
    company_id: "6650f1a2e4b0c8d9f0aa0001"
"""


def write(tmp_path: Path, text: str, name: str = "connections.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path: Path, environ: dict[str, str] | None = None) -> connections.Connections:
    # No connection here calls a token endpoint: nothing to keep or fetch tokens with.
    return connections.load(path, PROVIDERS, environ or {}, auth.Keeper(None, None))


def load_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, environ)
    return str(info.value)


# -- a good file ----------------------------------------------------------------


def test_a_connection_resolves_by_its_token(tmp_path):
    conns = load(write(tmp_path, GOOD))
    assert len(conns) == 1
    conn = conns.resolve(TOKEN)
    assert conn is not None
    assert conn.name == "acme-formation"
    assert conn.provider.name == "formation"
    assert conn.base_url == "https://formation.test"
    assert conn.state.auth.current() == {"X-API-KEY": SECRET}
    assert conn.context == {"company_id": "6650f1a2e4b0c8d9f0aa0001"}
    assert conns.resolve("tok-other") is None
    assert conns.resolve(TOKEN + " ") is None


def test_the_list_may_sit_under_a_connections_key(tmp_path):
    text = "connections:\n" + "".join("  " + line + "\n" for line in GOOD.splitlines())
    assert load(write(tmp_path, text)).resolve(TOKEN) is not None


def test_base_url_defaults_to_the_mapping_and_loses_a_trailing_slash(tmp_path):
    text = "- {token: a, provider: formation, credentials: {api_key: k}, context: {company_id: c}}\n" \
           "- {token: b, provider: formation, base_url: 'https://sandbox.test/v1/', credentials: {api_key: k}, context: {company_id: c}}\n"
    conns = load(write(tmp_path, text))
    assert conns.resolve("a").base_url == "https://api.clemta.com"
    assert conns.resolve("b").base_url == "https://sandbox.test/v1"


def test_a_connection_without_a_name_is_named_by_its_place_not_its_token(tmp_path):
    path = write(tmp_path, "- {token: secret-token, provider: formation, credentials: {api_key: k}, context: {company_id: c}}\n")
    name = load(path).resolve("secret-token").name
    assert "connections[0]" in name and "secret-token" not in name


# -- ${ENV_VAR} expansion ---------------------------------------------------------


def test_env_references_expand_everywhere(tmp_path):
    text = """\
- token: ${TOKEN_A}
  name: ${NAME}
  provider: formation
  base_url: https://${HOST}/api
  credentials:
    api_key: ${FORMATION_KEY}
  context:
    company_id: co-${CO}-${CO}
"""
    env = {"TOKEN_A": TOKEN, "NAME": "named", "HOST": "formation.test", "FORMATION_KEY": SECRET, "CO": "42"}
    conn = load(write(tmp_path, text), env).resolve(TOKEN)
    assert conn.name == "named"
    assert conn.base_url == "https://formation.test/api"
    assert conn.state.auth.current() == {"X-API-KEY": SECRET}
    assert conn.context == {"company_id": "co-42-42"}


# -- the context a mapping declares -------------------------------------------------

FREEE = """\
- token: tok-freee
  name: acme-freee
  provider: freee
  credentials: {client_id: c, client_secret: s, refresh_token: r}
  context:
"""


def test_a_context_is_read_as_its_mapping_declares_it(tmp_path):
    # freee's company_id is an integer, even from an environment variable; QuickBooks' defaults fill in.
    conn = load(write(tmp_path, FREEE + "    company_id: ${CO}\n    income_tax_code: 21\n"), {"CO": "1234"}).resolve("tok-freee")
    assert conn.context == {"company_id": 1234, "income_tax_code": 21}
    qbo = load(write(tmp_path, FREEE.replace("freee", "quickbooks") + "    realm_id: 9341452\n")).resolve("tok-quickbooks")
    assert qbo.context == {"realm_id": "9341452", "minorversion": "75", "expense_payment_type": "Cash"}


@pytest.mark.parametrize("context, expected", [
    ("    income_tax_code: 21\n", "connections[0]: context.company_id is required by freee.yaml: the freee company"),
    ("    company_id: acme\n", "connections[0]: context.company_id must be a whole number, not 'acme'"),
    ("    company_id: 1\n    income_tax_cod: 21\n", "context.income_tax_cod: freee.yaml reads no such setting; did you mean 'income_tax_code'?"),
    ("    company_id: [1]\n", "context.company_id must be an integer, not list [1]"),
])
def test_a_context_that_does_not_fit_fails_naming_connection_key_and_reason(tmp_path, context, expected):
    assert expected in load_error(write(tmp_path, FREEE + context))


@pytest.mark.parametrize("text, expected", [("true", True), (" FALSE ", False), ("1", None), ("0", None), ("yes", None)])
def test_a_boolean_from_the_environment_is_true_or_false_and_nothing_else(text, expected):
    from gateway.connections import _typed
    from gateway.settings import ConfigError
    if expected is None:
        with pytest.raises(ConfigError, match=r"context.flag must be a boolean \(true or false\)"):
            _typed(text, "boolean", "connections[0]: context.flag")
    else:
        assert _typed(text, "boolean", "connections[0]: context.flag") is expected


def test_expansion_is_not_recursive():
    # A value is used as it is: a variable's text is never read as another reference.
    assert expand_env("${A}", {"A": "${B}", "B": "no"}, "x") == "${B}"


def test_text_that_is_not_a_reference_stays():
    env = {"A": "a"}
    assert expand_env("$A ${A} ${ A} ${1A} {A}", env, "x") == "$A a ${ A} ${1A} {A}"
    assert expand_env({"k": [1, True, None, "${A}"]}, env, "x") == {"k": [1, True, None, "a"]}


def test_an_empty_variable_is_set(tmp_path):
    text = "- {token: t, provider: formation, base_url: 'https://f.test${SUFFIX}', credentials: {api_key: k}, context: {company_id: c}}\n"
    assert load(write(tmp_path, text), {"SUFFIX": ""}).resolve("t").base_url == "https://f.test"


def test_an_unset_variable_fails_naming_it_and_where(tmp_path):
    text = GOOD.replace(SECRET, "${FORMATION_API_KEY}")
    path = write(tmp_path, text)
    message = load_error(path, {"OTHER": "x"})
    assert "FORMATION_API_KEY" in message
    assert "is not set" in message
    assert str(path) in message
    assert "connections[0].credentials.api_key" in message


def test_an_unset_variable_in_a_later_entry_names_that_entry(tmp_path):
    text = GOOD + "- {token: t2, provider: formation, credentials: {api_key: k}, context: {company_id: '${CO}'}}\n"
    message = load_error(write(tmp_path, text))
    assert "connections[1].context.company_id" in message and "CO" in message


# -- what does not load -------------------------------------------------------------


def test_an_unknown_provider_fails_naming_it(tmp_path):
    message = load_error(write(tmp_path, GOOD.replace("provider: formation", "provider: no-such-provider")))
    assert "unknown provider 'no-such-provider'" in message
    assert "formation" in message  # and says which there are
    assert "connections[0]" in message


def test_a_missing_credential_fails_naming_it(tmp_path):
    message = load_error(write(tmp_path, "- {token: t, provider: formation, credentials: {apikey: k}, context: {company_id: c}}\n"))
    assert "credentials.api_key is required" in message


def test_an_empty_credential_is_missing(tmp_path):
    message = load_error(write(tmp_path, "- {token: t, provider: formation, credentials: {api_key: ''}, context: {company_id: c}}\n"))
    assert "credentials.api_key is required" in message


@pytest.mark.parametrize("url", ["file:///etc", "https://", "http:///path"])
def test_a_base_url_that_is_not_http_with_a_host(tmp_path, url):
    message = load_error(write(tmp_path, GOOD.replace("https://formation.test", url)))
    assert "base_url must be an http:// or https:// URL" in message


def test_two_connections_with_one_token(tmp_path):
    message = load_error(write(tmp_path, GOOD + GOOD.replace("acme-formation", "second")))
    assert "connections[1]" in message and "same token" in message


@pytest.mark.parametrize("text, expected", [
    ("- {token: t, provider: formation, credentials: {api_key: k}, tokn: x}\n", "unknown field `tokn`"),
    ("- {provider: formation, credentials: {api_key: k}, context: {company_id: c}}\n", "missing required field `token`"),
    ("- {token: t, provider: formation, credentials: {api_key: 5}}\n", "Expected `str`, got `int`"),
    ("- {token: t, provider: formation, credentials: [k]}\n", "Expected `object`, got `array`"),
    ("- just a string\n", "Expected `object`, got `str`"),
])
def test_a_malformed_entry_names_the_problem(tmp_path, text, expected):
    message = load_error(write(tmp_path, text))
    assert "connections[0]" in message and expected in message


@pytest.mark.parametrize("text", ["token: t\nprovider: formation\n", "", "42\n"])
def test_a_file_that_is_not_a_list(tmp_path, text):
    assert "expected a list of connections" in load_error(write(tmp_path, text))


def test_a_missing_file_is_named(tmp_path):
    message = load_error(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in message and "cannot read" in message


def test_broken_yaml_says_where(tmp_path):
    message = load_error(write(tmp_path, "- token: t\n  provider: [formation\n"))
    assert "cannot read YAML" in message and "line" in message


# -- secrets stay out of errors -------------------------------------------------------


BROKEN_WITH_SECRETS = {
    "unknown provider": GOOD.replace("provider: formation", "provider: nope"),
    "bad base_url": GOOD.replace("https://formation.test", "formation.test"),
    "duplicate token": GOOD + GOOD,
    "unknown field": GOOD + "  extra: 1\n",
    "wrong type": GOOD.replace('company_id: "6650f1a2e4b0c8d9f0aa0001"', "company_id: 1\n  name: [1]"),
    "unset variable": GOOD.replace("https://formation.test", "${NOT_SET}"),
    "credential of the wrong type": GOOD + f"- {{token: {TOKEN}2, provider: formation, credentials: {{api_key: {SECRET}, n: 5}}}}\n",
    "yaml error on the secret's line": GOOD.replace(f"api_key: {SECRET}", f'api_key: "{SECRET}'),
    "yaml error after the secret": GOOD + f"- token: {SECRET}\n  : [\n",
    "tab indentation": GOOD.replace(f"    api_key: {SECRET}", f"\tapi_key: {SECRET}"),
}


@pytest.mark.parametrize("case", BROKEN_WITH_SECRETS)
def test_secrets_never_appear_in_errors(tmp_path, case):
    message = load_error(write(tmp_path, BROKEN_WITH_SECRETS[case]))
    assert SECRET not in message
    assert TOKEN not in message
    assert "s3cret" not in message


def test_secrets_from_the_environment_never_appear_in_errors(tmp_path):
    text = GOOD.replace(SECRET, "${FORMATION_KEY}").replace(TOKEN, "${TOKEN}").replace("formation.test", "${HOST}")
    message = load_error(write(tmp_path, text), {"FORMATION_KEY": SECRET, "TOKEN": TOKEN})
    assert "HOST" in message
    assert SECRET not in message and TOKEN not in message


# -- settings -------------------------------------------------------------------------


def test_from_environ_defaults():
    settings = from_environ({})
    assert settings.api_keys == []
    assert settings.connections_file is None and settings.embedded
    assert settings.mappings_dirs == [bundled_mappings()]
    assert settings.cursor_secret_is_random and len(settings.cursor_secret) >= 32
    assert from_environ({}).cursor_secret != settings.cursor_secret


def test_from_environ_reads_the_gateway_variables(tmp_path):
    settings = from_environ({"GATEWAY_API_KEYS": " k1, ,k2 ,", "GATEWAY_CONNECTIONS": str(tmp_path / "c.yaml"),
                             "GATEWAY_MAPPINGS": str(tmp_path), "GATEWAY_CURSOR_SECRET": "shh"})
    assert settings.api_keys == ["k1", "k2"]
    assert settings.connections_file == tmp_path / "c.yaml" and not settings.embedded
    assert settings.mappings_dirs == [bundled_mappings(), tmp_path]
    assert settings.cursor_secret == b"shh" and not settings.cursor_secret_is_random


def test_empty_variables_count_as_unset():
    settings = from_environ({"GATEWAY_CONNECTIONS": "", "GATEWAY_MAPPINGS": "", "GATEWAY_CURSOR_SECRET": ""})
    assert settings.embedded and settings.mappings_dirs == [bundled_mappings()] and settings.cursor_secret_is_random


# -- create_app -------------------------------------------------------------------------


def test_connections_without_api_keys_fail_at_start(tmp_path):
    env = {"GATEWAY_CONNECTIONS": str(write(tmp_path, GOOD))}
    with pytest.raises(ConfigError, match="GATEWAY_API_KEYS"):
        create_app(None, environ=env)
    with pytest.raises(ConfigError, match="GATEWAY_API_KEYS"):
        create_app(None, environ={**env, "GATEWAY_API_KEYS": " , "})


def test_create_app_reads_the_connections_file_through_the_given_environment(tmp_path):
    path = write(tmp_path, GOOD.replace(SECRET, "${FORMATION_KEY}"))
    env = {"GATEWAY_CONNECTIONS": str(path), "GATEWAY_API_KEYS": "k"}
    with pytest.raises(ConfigError, match="FORMATION_KEY"):
        create_app(None, environ=env)
    app = create_app(None, environ={**env, "FORMATION_KEY": SECRET})
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_create_app_takes_explicit_settings(tmp_path):
    env = {"GATEWAY_CONNECTIONS": str(write(tmp_path, GOOD)), "GATEWAY_API_KEYS": "k"}
    with TestClient(create_app(from_environ(env), environ={})) as client:
        response = client.get("/accounting/contacts", headers={"x-api-key": "wrong", "x-connection-token": TOKEN})
        assert response.status_code == 401


def test_an_unknown_provider_fails_at_start(tmp_path):
    env = {"GATEWAY_CONNECTIONS": str(write(tmp_path, GOOD.replace("provider: formation", "provider: wavebooks"))),
           "GATEWAY_API_KEYS": "k"}
    with pytest.raises(ConfigError, match="unknown provider 'wavebooks'"):
        create_app(None, environ=env)


def test_a_missing_mappings_directory_fails_at_start(tmp_path):
    with pytest.raises(MappingError, match="no such directory"):
        create_app(None, environ={"GATEWAY_MAPPINGS": str(tmp_path / "none")})


def test_gateway_mappings_adds_to_the_bundled_ones_and_replaces_by_name(tmp_path):
    """An operator adds a provider, or fixes a bundled one, without a source checkout."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / "acme.yaml").write_text("provider: acme\nbase_url: https://a.test\nauth: {type: none}\n")
    (second / "my-xero.yaml").write_text("provider: xero\nbase_url: https://xero.test\nauth: {type: none}\n")
    providers = mapping.load_dirs(from_environ({"GATEWAY_MAPPINGS": f"{first}:{second}"}).mappings_dirs)
    assert {"formation", "freee", "quickbooks", "acme", "xero"} <= set(providers)
    assert providers["xero"].base_url == "https://xero.test" and providers["formation"].source.parent == bundled_mappings()
    (second / "acme.yaml").write_text("provider: acme\nbase_url: https://b.test\nauth: {type: none}\n")
    with pytest.raises(MappingError, match="'acme' is also mapped by"):
        mapping.load_dirs(from_environ({"GATEWAY_MAPPINGS": f"{first}:{second}"}).mappings_dirs)


def test_the_embedded_default_serves_the_sandbox_with_the_demo_key():
    with TestClient(create_app(None, environ={})) as client:
        headers = {"x-api-key": DEMO_API_KEY, "x-connection-token": SANDBOX_TOKEN}
        created = client.post("/accounting/contacts", headers=headers,
                              json={"name": "Ann", "email_address": "ann@example.com", "is_customer": True})
        assert created.status_code == 201, created.text
        assert created.json()["is_customer"] is True
        listed = client.get("/accounting/contacts", headers=headers).json()
        assert [c["name"] for c in listed["data"]] == ["Ann"]


def test_the_embedded_default_uses_configured_api_keys_instead_of_the_demo_key():
    with TestClient(create_app(None, environ={"GATEWAY_API_KEYS": "mine"})) as client:
        demo = client.get("/accounting/contacts", headers={"x-api-key": DEMO_API_KEY, "x-connection-token": SANDBOX_TOKEN})
        assert demo.status_code == 401
        mine = client.get("/accounting/contacts", headers={"x-api-key": "mine", "x-connection-token": SANDBOX_TOKEN})
        assert mine.status_code == 200


# -- gateway serve ----------------------------------------------------------------------


def serve(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway", "serve", "--port", str(free_port())], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def serve_cases(tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    broken_mappings = tmp_path / "mappings"
    broken_mappings.mkdir()
    (broken_mappings / "bad.yaml").write_text("provider: bad\nbase_url: https://b.test\nauth: {type: none}\nextra: 1\n")
    conns = str(write(tmp_path, GOOD))
    return {
        "no api keys": ({"GATEWAY_CONNECTIONS": conns}, "GATEWAY_API_KEYS is not set"),
        "unset variable": ({"GATEWAY_CONNECTIONS": str(write(tmp_path, GOOD.replace("formation.test", "${NOPE_HOST}"), "v.yaml")),
                            "GATEWAY_API_KEYS": "k"}, "environment variable NOPE_HOST is not set"),
        "unknown provider": ({"GATEWAY_CONNECTIONS": str(write(tmp_path, GOOD.replace("provider: formation", "provider: no-such-provider"), "p.yaml")),
                              "GATEWAY_API_KEYS": "k"}, "unknown provider 'no-such-provider'"),
        "broken yaml": ({"GATEWAY_CONNECTIONS": str(write(tmp_path, GOOD.replace(f"api_key: {SECRET}", f'api_key: "{SECRET}'), "y.yaml")),
                         "GATEWAY_API_KEYS": "k"}, "cannot read YAML"),
        "missing file": ({"GATEWAY_CONNECTIONS": str(tmp_path / "absent.yaml"), "GATEWAY_API_KEYS": "k"}, "absent.yaml"),
        "broken mapping": ({"GATEWAY_MAPPINGS": str(broken_mappings)}, "bad.yaml: $: Object contains unknown field `extra`"),
    }


CASES = ["no api keys", "unset variable", "unknown provider", "broken yaml", "missing file", "broken mapping"]


@pytest.mark.parametrize("case", CASES)
def test_serve_with_a_broken_config_exits_with_a_clear_message(tmp_path, case):
    env, expected = serve_cases(tmp_path)[case]
    result = serve(env)
    assert result.returncode != 0
    assert "gateway: cannot start: " in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # PyYAML's snippets cut long lines short: look for a piece of the secret too.
    assert "s3cret" not in result.stderr + result.stdout
    assert TOKEN not in result.stderr + result.stdout
