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
