"""API keys (admin scope): create (the secret is returned once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, status

from carrygate.app.auth import create_key, list_keys, revoke_key
from carrygate.app.deps import SessionDep, require_scope
from carrygate.app.errors import NotFound
from carrygate.app.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyRead

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[require_scope("admin")],
                   responses={401: {"description": "no or an invalid API key"}, 403: {"description": "the key lacks the admin scope"}})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, session: SessionDep) -> ApiKeyCreated:
    """Create a key. Until the first key exists the API is open; creating one closes it."""
    row, secret = create_key(session, body.name, list(body.scopes), body.rate_limit_per_minute)
    return ApiKeyCreated.model_validate(ApiKeyRead.model_validate(row).model_dump() | {"key": secret})


@router.get("", response_model=ApiKeyList)
def list_api_keys(session: SessionDep) -> ApiKeyList:
    rows = list_keys(session)
    return ApiKeyList(data=[ApiKeyRead.model_validate(r) for r in rows], count=len(rows))


@router.delete("/{key_id}", response_model=ApiKeyRead, responses={404: {"description": "no such key"}})
def revoke_api_key(key_id: str, session: SessionDep) -> ApiKeyRead:
    """Revoke a key (by id or prefix); it stops working at once. Revoked keys stay listed."""
    row = revoke_key(session, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return ApiKeyRead.model_validate(row)
