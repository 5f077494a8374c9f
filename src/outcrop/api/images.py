"""Sky image collections: position queries and cutouts (`/api/images…`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
