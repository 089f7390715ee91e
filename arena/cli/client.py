"""A small HTTP client for the CLI: turns the control plane's error bodies into clean exits."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

err = Console(stderr=True)


def endpoint(url: str | None, key: str | None) -> tuple[str, str | None]:
    """The control plane's URL and API key: the options given, else ARENA_URL and
    ARENA_API_KEY / ARENA_ADMIN_KEY."""
    from arena.settings import ClientSettings

    settings = ClientSettings()
    return url or settings.url, key or settings.key()


def call(
    method: str, url: str, path: str, *, api_key: str | None = None, json: Any = None,
    timeout_s: float = 600.0,
) -> Any:
    """Call the control plane; on an error print its message and exit with status 1."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=json, headers=headers, timeout=timeout_s
        )
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] cannot reach the control plane at {url}: {exc}")
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        err.print(f"[red]error ({response.status_code}):[/red] {message}")
        raise typer.Exit(1)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()
