"""The slice of the Kubernetes REST API a list/watch source needs.

kubernetes_asyncio is used for what it is good at - configuration, authentication, TLS and
its aiohttp session - but not for its generated models: paths are built here from API
discovery and bodies are read as raw JSON, so every kind works alike, custom resources too.

Errors raised here (transport failures surface as `aiohttp.ClientError`, `TimeoutError` or
`OSError` and are not wrapped):

    KubeApiError            the server refused a request (non-2xx, or a watch ERROR event)
     +-- ResourceExpired    410 Gone: a resourceVersion or continue token fell out of history
     +-- UnknownKind        discovery does not serve the kind in its API version
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration

from app.informer.objects import KindKey, KubeObject

Query = Sequence[tuple[str, str]]

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
"""Discovery and list pages: a page of `limit` objects arrives well within this."""

GONE = 410


class KubeApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class ResourceExpired(KubeApiError):
    """410 Gone: the requested history was compacted; only a fresh list can continue."""


class UnknownKind(KubeApiError):
    """The kind is not served in its API version (a typo, or a CRD not installed yet)."""


def error_from_status(status: object, http_status: int = 0) -> KubeApiError:
    """The error a `Status` object (an error body or a watch ERROR event) describes."""
    fields: dict[str, Any] = status if isinstance(status, dict) else {}
    code = fields.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else http_status
    message = str(fields.get("message") or fields.get("reason") or "no message")
    return (ResourceExpired if code == GONE else KubeApiError)(code, message)


def group_path(api_version: str) -> str:
    """The legacy core group (`v1`) lives under /api, every named group under /apis."""
    return f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"


@dataclass(frozen=True, slots=True)
class ApiResource:
    """One kind as discovery describes it."""

    kind: KindKey
    plural: str
    namespaced: bool

    @property
    def collection_path(self) -> str:
        """Every object of the kind, across all namespaces (for cluster-scoped kinds too)."""
        return f"{group_path(self.kind.api_version)}/{self.plural}"


def parse_discovery(api_version: str, document: KubeObject) -> dict[str, ApiResource]:
    """Index an APIResourceList by kind, leaving out subresources such as `pods/status`."""
    found: dict[str, ApiResource] = {}
    resources = document.get("resources")
    for entry in resources if isinstance(resources, list) else []:
        if not isinstance(entry, dict):
            continue
        name, kind = entry.get("name"), entry.get("kind")
        if isinstance(name, str) and isinstance(kind, str) and name and "/" not in name:
            key = KindKey(api_version, kind)
            found.setdefault(kind, ApiResource(key, name, bool(entry.get("namespaced"))))
    return found


class KubeApi:
    """GET requests against one API server, with discovery cached per API version.

    The `ApiClient` belongs to the caller, who closes it. A kind missing from the cached
    discovery triggers a fresh discovery, so CRDs installed later are found on retry.
    """

    def __init__(self, api_client: ApiClient) -> None:
        self._client = api_client
        self._discovered: dict[str, dict[str, ApiResource]] = {}

    async def resource(self, kind: KindKey) -> ApiResource:
        """Where `kind` is served; raise UnknownKind when discovery does not list it."""
        cached = self._discovered.get(kind.api_version, {})
        if kind.kind not in cached:
            document = await self.get_json(group_path(kind.api_version))
            cached = parse_discovery(kind.api_version, document)
            self._discovered[kind.api_version] = cached
        try:
            return cached[kind.kind]
        except KeyError:
            raise UnknownKind(404, f"the server does not serve {kind}") from None

    async def get_json(self, path: str, query: Query = ()) -> KubeObject:
        """One JSON object; raise KubeApiError for error statuses or non-object bodies."""
        async with self._get(path, query, REQUEST_TIMEOUT) as response:
            body = await response.read()
        document = orjson.loads(body)
        if not isinstance(document, dict):
            raise KubeApiError(response.status, f"GET {path} returned no JSON object")
        return document

    @asynccontextmanager
    async def stream(
        self, path: str, query: Query, *, idle_timeout_s: float
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """The body of a long GET (a watch), to be read line by line; closed on exit.

        No total timeout: the stream may last as long as the server keeps it open, but a
        silence longer than `idle_timeout_s` fails the read with a TimeoutError.
        """
        client_timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=idle_timeout_s)
        async with self._get(path, query, client_timeout) as response:
            yield response.content

    @asynccontextmanager
    async def _get(
        self, path: str, query: Query, client_timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        # Without _preload_content, call_api hands back the raw aiohttp response and checks
        # no status; auth_settings must be named or no bearer token is sent at all.
        response: aiohttp.ClientResponse = await self._client.call_api(
            path,
            "GET",
            query_params=list(query),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout,
        )
        async with response:
            if not 200 <= response.status < 300:
                raise error_from_status(_json_or_none(await response.read()), response.status)
            yield response


def _json_or_none(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


async def load_configuration(path: str | None) -> Configuration:
    """Client configuration from a kubeconfig file, or from the pod's service account.

    `path=None` means in-cluster config when KUBERNETES_SERVICE_HOST is set, else the default
    kubeconfig (~/.kube/config). Tokens from exec plugins (EKS, GKE...) expire, so they are
    refreshed before each request when due; in-cluster tokens refresh by themselves.
    """
    configuration = Configuration()
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return configuration
    loader = await config.load_kube_config(
        config_file=path, client_configuration=configuration, persist_config=False
    )
    if hasattr(loader, "exec_plugin_expiry"):

        async def refresh_exec_token(target: Configuration) -> None:
            await loader.load_from_exec_plugin()  # a no-op until the token is about to expire
            target.api_key["BearerToken"] = loader.token

        configuration.refresh_api_key_hook = refresh_exec_token
    return configuration
