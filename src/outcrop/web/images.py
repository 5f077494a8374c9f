"""The HTML page of an image collection: a searchable list and a cutout preview."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
