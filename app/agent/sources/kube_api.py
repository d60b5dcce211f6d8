"""The slice of the Kubernetes REST API a list/watch source (and workload delivery) needs.

kubernetes_asyncio is used for what it is good at - configuration, authentication, TLS and
its aiohttp session - but not for its generated models: paths are built here from API
discovery and bodies are read as raw JSON, so every kind works alike, custom resources too.

Errors raised here (transport failures surface as `aiohttp.ClientError`, `TimeoutError` or
`OSError` and are not wrapped):

    KubeApiError            the server refused a request (non-2xx, or a watch ERROR event)
     +-- ResourceExpired    410 Gone: a resourceVersion or continue token fell out of history
     +-- ResourceVersionTooLarge  504: the server's history is behind the resourceVersion
     +-- UnknownKind        discovery does not serve the kind in its API version
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration

from app.informer.objects import KindKey, KubeObject, parse_resource_version

logger = logging.getLogger(__name__)

Query = Sequence[tuple[str, str]]

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
"""Discovery and list pages: a page of `limit` objects arrives well within this."""

GONE = 410
NOT_FOUND = 404
DEFAULT_NAMESPACE = "default"

LIST_RESTARTS = 3
"""How often a paginated list starts over after its continue token expired, before giving up."""


class KubeApiError(Exception):
    """The API server answered with an error status (`reason`: the Status reason, if any)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason


class ResourceExpired(KubeApiError):
    """410 Gone: the requested history was compacted; only a fresh list can continue."""


class ResourceVersionTooLarge(KubeApiError):
    """504 "Too large resource version": the server's history is behind the resourceVersion
    asked for (etcd restored from a backup, or a lagging cache). client-go relists on it;
    waiting for the server to catch up would skip what happened in between."""


class UnknownKind(KubeApiError):
    """The kind is not served in its API version (a typo, or a CRD not installed yet)."""


def error_from_status(status: object, http_status: int = 0) -> KubeApiError:
    """The error a `Status` object (an error body or a watch ERROR event) describes."""
    fields: dict[str, Any] = status if isinstance(status, dict) else {}
    code = fields.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else http_status
    reason = str(fields.get("reason") or "")
    message = str(fields.get("message") or reason or "no message")
    if code == GONE:
        return ResourceExpired(code, message, reason)
    details = fields.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    too_large = "Too large resource version" in message or any(
        isinstance(c, dict) and c.get("reason") == "ResourceVersionTooLarge"
        for c in (causes if isinstance(causes, list) else [])
    )
    return (ResourceVersionTooLarge if too_large else KubeApiError)(code, message, reason)


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

    def object_namespace(self, namespace: str) -> str:
        """Where an object lives: `""` if cluster-scoped; a namespaced kind defaults to
        `default`, as with kubectl."""
        return (namespace or DEFAULT_NAMESPACE) if self.namespaced else ""

    def object_path(self, namespace: str, name: str) -> str:
        """One object (see `object_namespace`)."""
        base = group_path(self.kind.api_version)
        name = quote(name, safe="")
        if not self.namespaced:
            return f"{base}/{self.plural}/{name}"
        namespace = quote(self.object_namespace(namespace), safe="")
        return f"{base}/namespaces/{namespace}/{self.plural}/{name}"


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
    """Requests against one API server, with discovery cached per API version.

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
        return await self.request_json("GET", path, query)

    async def request_json(
        self,
        method: str,
        path: str,
        query: Query = (),
        *,
        body: KubeObject | None = None,
        content_type: str = "application/json",
    ) -> KubeObject:
        """One request answered by a JSON object (`body` is sent as JSON, which is YAML too)."""
        request = _Request(method, path, query, body, content_type)
        async with self._open(request, REQUEST_TIMEOUT) as response:
            raw = await response.read()
        document = orjson.loads(raw)
        if not isinstance(document, dict):
            raise KubeApiError(response.status, f"{method} {path} returned no JSON object")
        return document

    async def list_all(
        self, resource: ApiResource, *, page_size: int, label_selector: str = ""
    ) -> tuple[list[Any], int]:
        """Every item of a kind across all namespaces, and the listing's resourceVersion.

        Fetched `page_size` at a time; a continue token that expires mid-way restarts the
        list, since pages from two snapshots do not mix.
        """
        selector = [("labelSelector", label_selector)] if label_selector else []
        for _ in range(LIST_RESTARTS):
            try:
                return await self._list_pages(resource, page_size, selector)
            except ResourceExpired as exc:
                logger.info("listing %s: continue token expired (%s); again", resource.kind, exc)
        message = f"listing {resource.kind}: continue token expired {LIST_RESTARTS} times"
        raise KubeApiError(GONE, message)

    async def _list_pages(
        self, resource: ApiResource, page_size: int, selector: Query
    ) -> tuple[list[Any], int]:
        items: list[Any] = []
        resource_version = -1  # taken from the first page: the snapshot every page is of
        token = ""
        while True:
            query = [("limit", str(page_size)), *selector]
            page = await self.get_json(resource.collection_path, query + _continue(token))
            meta = page.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            if resource_version < 0:
                resource_version = parse_resource_version(meta.get("resourceVersion"))
            page_items = page.get("items")
            items.extend(page_items if isinstance(page_items, list) else [])
            token = meta.get("continue") or ""
            if not isinstance(token, str) or not token:
                return items, resource_version

    @asynccontextmanager
    async def stream(
        self, path: str, query: Query, *, idle_timeout_s: float
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """The body of a long GET (a watch), to be read line by line; closed on exit.

        No total timeout: the stream may last as long as the server keeps it open, but a
        silence longer than `idle_timeout_s` fails the read with a TimeoutError.
        """
        client_timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=idle_timeout_s)
        async with self._open(_Request("GET", path, query), client_timeout) as response:
            yield response.content

    @asynccontextmanager
    async def _open(
        self, request: _Request, client_timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        # Without _preload_content, call_api hands back the raw aiohttp response and checks
        # no status; auth_settings must be named or no bearer token is sent at all. The
        # REST client JSON-encodes `body` for JSON content types and for apply-patch+yaml.
        response: aiohttp.ClientResponse = await self._client.call_api(
            request.path,
            request.method,
            query_params=list(request.query),
            header_params={"Accept": "application/json", "Content-Type": request.content_type},
            body=request.body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout,
        )
        async with response:
            if not 200 <= response.status < 300:
                raise error_from_status(_json_or_none(await response.read()), response.status)
            yield response


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: Query
    body: KubeObject | None = None
    content_type: str = "application/json"


def _continue(token: str) -> list[tuple[str, str]]:
    return [("continue", token)] if token else []


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
