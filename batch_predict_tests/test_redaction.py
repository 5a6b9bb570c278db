"""`redact`: passwords, tokens and secret query values masked; scheme, user, host, port and path kept."""

import pytest

from batch_predict.redaction import redact


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://alice:secret@mlflow.internal:5000", "http://alice:***@mlflow.internal:5000"),
        ("https://alice:secret@mlflow.internal/api?x=1", "https://alice:***@mlflow.internal/api?x=1"),
        ("postgresql://alice:secret@db:5432/mlflow", "postgresql://alice:***@db:5432/mlflow"),
        ("postgresql+psycopg2://alice:p@ss:w0rd@db/mlflow", "postgresql+psycopg2://alice:***@db/mlflow"),
        ("mysql://alice:@db/mlflow", "mysql://alice:***@db/mlflow"),
        ("https://ghp_token@github.com/org/repo", "https://***@github.com/org/repo"),
        # The example of the form in messages stays readable; a real name without a password is masked.
        ("use postgresql://user@host:port/database", "use postgresql://user@host:port/database"),
        ("postgresql://username@db/x", "postgresql://***@db/x"),
        ("http://host:5000/?token=abc&x=1", "http://host:5000/?token=***&x=1"),
        ("http://host/?Password=abc;api_key=def#top", "http://host/?Password=***;api_key=***#top"),
        (
            "s3://bucket/m.pkl?X-Amz-Credential=AKIA/x&X-Amz-Signature=ff&X-Amz-Security-Token=tt",
            "s3://bucket/m.pkl?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***",
        ),
        (
            "https://acct.blob.core.windows.net/c/m?sv=2024&sig=abc%3D",
            "https://acct.blob.core.windows.net/c/m?sv=2024&sig=***",
        ),
        ("host=db user=alice password=secret dbname=x", "host=db user=alice password=*** dbname=x"),
        (
            "API request to http://alice:secret@127.0.0.1:5000/api/2.0/x failed ('http://bob:pw@h:1')",
            "API request to http://alice:***@127.0.0.1:5000/api/2.0/x failed ('http://bob:***@h:1')",
        ),
    ],
)
def test_credentials_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////abs/path/mlflow.db",
        "sqlite:///mlflow.db",
        "http://127.0.0.1:5000",
        "models:/iris@champion",
        "file:///tmp/mlruns",
        "Registered model 'iris' has no alias 'champion'; write to ops@example.com",
        "",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:hunter2@db:5432/wh", "postgresql://alice:***@db:5432/wh"),
        # passwords of every shape libpq reads in a URL the warehouse setting takes: "=", "&", ";", "?", "#",
        # quotes, an encoded "@"
        ("postgresql://u:MyHunter2=2024@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:x7&token=hunter2@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:hunter2;pwd=9@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:hunter2?q@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:hunter2#q@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:hunter2'q@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:hunter2%40q@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h/db?%70assword=hunter2", "postgresql://h/db?%70assword=***"),  # libpq decodes the key
        ("postgresql://h/db?password=hunter2&sslmode=require", "postgresql://h/db?password=***&sslmode=require"),
        ("postgresql://h/db?sslpassword=hunter2&sslmode=require", "postgresql://h/db?sslpassword=***&sslmode=require"),
        # what is not secret stays as written: several hosts, IPv6, a socket, parameters
        ("postgresql://h1:5432,h2:5433/wh", "postgresql://h1:5432,h2:5433/wh"),
        ("postgresql://[fe80::1%25eth0]:5432/wh", "postgresql://[fe80::1%25eth0]:5432/wh"),
        ("postgresql:///wh?host=/tmp&port=5433", "postgresql:///wh?host=/tmp&port=5433"),
        ("postgres://u:pw@h/db?application_name=a%40b", "postgres://u:***@h/db?application_name=a%40b"),
    ],
)
def test_a_postgresql_url_the_setting_takes_is_shown_without_its_password(url: str, shown: str) -> None:
    from batch_predict.settings import load_settings
    from batch_predict.warehouse import shown_warehouse

    assert load_settings({"BATCH_PREDICT_WAREHOUSE": url}).warehouse == url  # the setting takes it as it is
    assert shown_warehouse(url) == shown


@pytest.mark.parametrize(
    "value",
    [
        "host=h password='hun ter=2' dbname=d",
        "host=h password='a\\'hun ter2' dbname=d",
        'host=h password="hun ter2" dbname=d',
        "host=h password=hun\\ ter2 dbname=d",
        "host=h sslpassword='hun ter2'",
        "postgresql//h/db?password=hun ter=2",
        "postgresql//h/db?password=hun;ter=2&x=1",
        "postgresql://alice@h/db?password=hun&ter2",
        "postgresql//u:MyHun=ter2@h/db",
        "mysql://u:hun&ter=2@h/db",
    ],
)
def test_a_mistyped_url_is_shown_without_any_of_its_password(value: str) -> None:
    from batch_predict.redaction import redact_url

    shown = redact_url(value)
    assert "hun" not in shown and "ter" not in shown, shown


def test_the_ui_is_given_the_variable_not_a_url_with_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resource config shows in the UI: a warehouse URL with a password, however written, goes as EnvVar."""
    import dagster as dg

    from batch_predict.resources import _secret_free

    for url in ("postgresql://u:hunter2@h/db", "postgresql://u:hunter2?q@h/db", "postgresql://h/db?%70assword=x"):
        monkeypatch.setenv("BATCH_PREDICT_WAREHOUSE", url)
        assert isinstance(_secret_free(url, "BATCH_PREDICT_WAREHOUSE"), dg.EnvVar), url
    monkeypatch.setenv("BATCH_PREDICT_WAREHOUSE", "/data/warehouse.duckdb")
    assert _secret_free("/data/warehouse.duckdb", "BATCH_PREDICT_WAREHOUSE") == "/data/warehouse.duckdb"
