"""The server's own routes beside LitServe's: /health with the model's digest, /metrics, /feedback, /info."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from . import metrics
from .artifact import Servable
from .requestlog import now


def add(server, model: Servable, feedback) -> None:
    app = server.app
    about = {"digest": model.digest, "name": model.name, "task": model.task, "path": str(model.path)}

    @app.get("/health")
    async def health():
        status = dict(server.workers_setup_status or {})
        ready = bool(status) and all(v == "ready" for v in status.values())
        return JSONResponse({"status": "ok" if ready else "starting", **about}, status_code=200 if ready else 503)

    @app.get("/info")
    async def info():
        out = dict(about)
        api = server.lit_api[0] if isinstance(server.lit_api, list) else server.lit_api
        if getattr(api, "schema", None) is not None:
            out["schema"] = {"source": api.schema.source, "columns": [c.as_json() for c in api.schema.columns]}
        return out

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post("/feedback")
    async def post_feedback(request: Request):
        body = await request.json()
        problems = []
        if not isinstance(body, dict):
            body, problems = {}, [("(body)", 'send {"request_id": "...", "label": ...}')]
        if not isinstance(body.get("request_id"), str) or not body.get("request_id"):
            problems.append(("request_id", "required: the X-Request-Id of the answered request, a string"))
        if "label" not in body:
            problems.append(("label", "required: the true outcome for that request"))
        problems += [(k, "unknown field") for k in body if k not in ("request_id", "label")]
        if problems:
            return JSONResponse({"detail": {"error": "feedback must be {request_id, label}",
                                            "fields": [{"field": f, "problem": p} for f, p in problems]}}, 422)
        feedback.write({"request_id": body["request_id"], "label": body["label"], "time": now(),
                        "digest": model.digest})
        return {"ok": True}
