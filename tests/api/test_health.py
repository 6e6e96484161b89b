from fastapi.testclient import TestClient


def test_health_is_public_and_reports_the_schema(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["schema"] is not None
