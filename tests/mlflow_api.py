"""Reading a real MLflow server over its REST API (independent of groklab.tracking)."""

import json
import urllib.parse
import urllib.request


def api(uri: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """GET (with ``query``) or POST (with ``body``) one MLflow REST endpoint."""
    url = f"{uri}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def runs_of(uri: str, experiment: str) -> list[dict]:
    exp = api(uri, "experiments/get-by-name", experiment_name=experiment)["experiment"]
    return api(uri, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                    "max_results": 100})["runs"]


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}
