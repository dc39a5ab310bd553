"""The API's view of the forecasters' online A/B: `GET /v1/models` (viewer) lists the published model per
offer group and target (the champion of its last promotion; a group never promoted publishes naive) and
the latest promotions with both candidates' progressive-validation scores."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from outputs.queries import ReadModel


def router(rm: ReadModel, viewer: Any) -> APIRouter:
    """`viewer`: the app's auth dependency (`Depends(auth("viewer"))`)."""
    r = APIRouter(tags=["market"])

    @r.get("/v1/models", dependencies=[viewer])
    def models(limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        """Champion per (group, target) and the latest promotions (ModelPromoted events the sink stored)."""
        return rm.model_champions(limit)

    return r
