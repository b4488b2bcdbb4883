#!/usr/bin/env python3
"""Kubernetes API stand-in for klaxon's tests: kmock's KubernetesEmulator on a loopback port.

Usage:  python kmock_server.py [--host 127.0.0.1] [--port 0] [--exit-on-stdin-eof]
Prints ``READY <port>`` on stdout once listening; exits on SIGTERM/SIGINT, or with
``--exit-on-stdin-eof`` when stdin closes (so it dies with the test process that started it).
Started by tests/support/kube.rs.

What kmock (PyPI ``kmock``, https://github.com/nolar/kmock) covers unchanged:
  - discovery: /, /version, /api, /apis, /api/v1, /apis/<group>/<version> (bundled resources)
  - objects in memory: POST (create, 409 if it exists), GET one, LIST, watch, DELETE
  - GET of the ``status`` subresource (returns the whole object, as Kubernetes does)

What ``KlaxonKubernetes`` adds here, because klaxon's KubeExecutor needs it and kmock lacks it:
  - what the API server fills in on create: metadata.namespace (from the URL), uid,
    resourceVersion, creationTimestamp, generation=1; ``status`` sent on create is dropped
    (pods start as ``Pending``), and deployments default to ``spec.replicas: 1``
  - PATCH of objects and of their ``status`` subresource with real semantics: JSON merge
    patch (RFC 7386), JSON patch (RFC 6902) and strategic-merge patch (lists of named items
    such as ``containers`` merged by ``name``); a PATCH on the object ignores ``status`` and a
    PATCH on ``/status`` only changes ``status``; resourceVersion bumps on every write and
    metadata.generation bumps when ``spec`` changes
  - optimistic concurrency: a write carrying a stale metadata.resourceVersion gets
    ``409 Conflict`` ("the object has been modified; ...")
  - LIST with ``labelSelector`` (=, ==, !=, in, notin, key, !key) and ``fieldSelector``
    (=, ==, != on dotted paths such as spec.nodeName)
  - the ``deployments/scale`` subresource: GET, PATCH, PUT (autoscaling/v1 Scale)
  - the ``pods/eviction`` subresource (POST policy/v1 Eviction), checked against
    PodDisruptionBudgets the way the API server and disruption controller do: 429
    TooManyRequests when the budget allows no disruption, 500 when several PDBs match
  - Kubernetes-shaped 404s: reason ``NotFound``, message ``deployments.apps "x" not found``
  - test controls (not Kubernetes):
      GET  /_standin/requests          -> [{"method", "path", "query"}] served so far
      POST /_standin/concurrent-write  {"path": "<object path>", "patch": {...}}: just before
           the next write to that object, another writer merge-patches it (bumping its
           resourceVersion), to provoke a genuine 409 in a read-modify-write
"""

import argparse
import asyncio
import copy
import datetime
import json
import math
import re
import signal
import sys
import uuid
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import enums
from kmock._internal.k8s import KubernetesError

PODS = kmock.resource('', 'v1', 'pods')
PDBS = kmock.resource('policy', 'v1', 'poddisruptionbudgets')
DEPLOYMENTS = kmock.resource('apps', 'v1', 'deployments')

# Strategic-merge keys of the lists klaxon (or a test) may patch; other lists are replaced.
MERGE_KEYS = {
    'containers': 'name',
    'initContainers': 'name',
    'ephemeralContainers': 'name',
    'env': 'name',
    'volumes': 'name',
    'volumeMounts': 'mountPath',
    'conditions': 'type',
}


def status_error(code: int, reason: str, message: str, details: dict | None = None) -> KubernetesError:
    return KubernetesError(status=code, reason=reason, message=message, details=details or {})


def qualified(resource: Any) -> str:
    """``deployments.apps`` / ``pods``: how the API server names a resource in messages."""
    return f'{resource.plural}.{resource.group}' if resource.group else resource.plural


def not_found(resource: Any, name: str) -> KubernetesError:
    details = {'name': name, 'group': resource.group, 'kind': resource.plural}
    return status_error(404, 'NotFound', f'{qualified(resource)} "{name}" not found', details)


def conflict(resource: Any, name: str) -> KubernetesError:
    message = (f'Operation cannot be fulfilled on {qualified(resource)} "{name}": the object has been '
               'modified; please apply your changes to the latest version and try again')
    details = {'name': name, 'group': resource.group, 'kind': resource.plural}
    return status_error(409, 'Conflict', message, details)


# --- patches ---------------------------------------------------------------------------------

def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(base: Any, patch: Any) -> Any:
    """Strategic-merge patch for the lists in MERGE_KEYS (no ``$patch`` directives)."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return merge_patch(base, patch)
    result = dict(base)
    for key, value in patch.items():
        if key.startswith('$'):
            raise status_error(400, 'BadRequest', f'the stand-in does not support the {key} directive')
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = merge_list(result[key], value, MERGE_KEYS[key])
        else:
            result[key] = strategic_merge(result.get(key), value)
    return result


def merge_list(base: list, patch: list, merge_key: str) -> list:
    result = [copy.deepcopy(item) for item in base]
    for item in patch:
        for index, existing in enumerate(result):
            if existing.get(merge_key) == item.get(merge_key):
                result[index] = strategic_merge(existing, item)
                break
        else:
            result.append(copy.deepcopy(item))
    return result


def apply_patch(current: dict, request: kmock.Request) -> dict:
    content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
    if content_type == 'application/json-patch+json':
        try:
            return jsonpatch.apply_patch(copy.deepcopy(current), request.data)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise status_error(422, 'Invalid', f'the JSON patch failed: {e}')
    if not isinstance(request.data, dict):
        raise status_error(400, 'BadRequest', 'the patch body must be a JSON object')
    if content_type == 'application/merge-patch+json':
        return merge_patch(current, request.data)
    if content_type == 'application/strategic-merge-patch+json':
        return strategic_merge(current, request.data)
    raise status_error(415, 'UnsupportedMediaType', f'the stand-in does not support {content_type!r} patches')


def wanted_version(request: kmock.Request) -> str | None:
    """The resourceVersion a write is conditional on (merge/strategic patches, PUT bodies)."""
    if isinstance(request.data, dict):
        return (request.data.get('metadata') or {}).get('resourceVersion') or None
    return None


# --- selectors -------------------------------------------------------------------------------

def split_terms(selector: str) -> list[str]:
    """Split on commas outside parentheses: ``a in (x,y),b`` -> ``['a in (x,y)', 'b']``."""
    terms, depth, current = [], 0, ''
    for char in selector:
        depth += {'(': 1, ')': -1}.get(char, 0)
        if char == ',' and depth == 0:
            terms.append(current)
            current = ''
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


SET_TERM = re.compile(r'^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$')
EQ_TERM = re.compile(r'^([\w./-]+)\s*(!=|==|=)\s*([\w./-]*)$')
EXISTS_TERM = re.compile(r'^(!?)([\w./-]+)$')


def label_term_matches(term: str, labels: dict) -> bool:
    if m := SET_TERM.match(term):
        values = {v.strip() for v in m.group(3).split(',')}
        found = m.group(1) in labels and labels[m.group(1)] in values
        return found if m.group(2) == 'in' else not found
    if m := EQ_TERM.match(term):
        equal = labels.get(m.group(1)) == m.group(3)
        return not equal if m.group(2) == '!=' else equal
    if m := EXISTS_TERM.match(term):
        return (m.group(2) in labels) != bool(m.group(1))
    raise status_error(400, 'BadRequest', f'unable to parse requirement: {term!r}')


def field_term_matches(term: str, obj: dict) -> bool:
    m = EQ_TERM.match(term)
    if not m:
        raise status_error(400, 'BadRequest', f'invalid field selector: {term!r}')
    value: Any = obj
    for part in m.group(1).split('.'):
        value = value.get(part) if isinstance(value, dict) else None
    equal = str(value if value is not None else '') == m.group(3)
    return not equal if m.group(2) == '!=' else equal


def label_selector_matches(selector: dict, labels: dict) -> bool:
    """A structured LabelSelector (matchLabels + matchExpressions); empty matches everything."""
    for key, value in (selector.get('matchLabels') or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get('matchExpressions') or []:
        key, op, values = expr['key'], expr['operator'], set(expr.get('values') or [])
        if op == 'In' and labels.get(key) not in values:
            return False
        if op == 'NotIn' and key in labels and labels[key] in values:
            return False
        if op == 'Exists' and key not in labels:
            return False
        if op == 'DoesNotExist' and key in labels:
            return False
    return True


def selector_string(selector: dict) -> str:
    terms = [f'{k}={v}' for k, v in (selector.get('matchLabels') or {}).items()]
    for expr in selector.get('matchExpressions') or []:
        op = expr['operator']
        if op in ('In', 'NotIn'):
            terms.append(f"{expr['key']} {op.lower()} ({','.join(expr.get('values') or [])})")
        else:
            terms.append(expr['key'] if op == 'Exists' else f"!{expr['key']}")
    return ','.join(terms)


def pod_ready(pod: dict) -> bool:
    conditions = (pod.get('status') or {}).get('conditions') or []
    return any(c.get('type') == 'Ready' and c.get('status') == 'True' for c in conditions)


def scaled(value: Any, total: int) -> int:
    """An IntOrString budget: ``2`` or ``"50%"`` of ``total`` (rounded up, as Kubernetes does)."""
    if isinstance(value, str) and value.endswith('%'):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


# --- the emulator ----------------------------------------------------------------------------

class KlaxonKubernetes(kmock.KubernetesEmulator):
    """kmock's emulator plus the API-server behaviour listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        self._version = 0
        self._pending_writes: dict[str, dict] = {}

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path, method = request.url.path, request.method
        if path.startswith('/_standin/'):
            return await self._control(request)
        if request.resource is None:
            return await super()._handle(request)
        if method in ('PATCH', 'PUT', 'POST') and request.name is not None:
            await self._apply_concurrent_write(request)
        if request.subresource == 'scale' and request.resource == DEPLOYMENTS:
            return await self._scale(request)
        if request.subresource == 'eviction' and request.resource == PODS and method == 'POST':
            return await self._evict(request)
        if request.action == enums.action.UPDATE and request.subresource in (None, 'status'):
            return await self._patch(request)
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            self._prepare_create(request)
        return await super()._handle(request)

    # kmock's own handlers, made Kubernetes-shaped.

    async def _serve_list(self, request: kmock.Request) -> Any:
        listing = await super()._serve_list(request)
        labels = split_terms(request.params.get('labelSelector', ''))
        fields = split_terms(request.params.get('fieldSelector', ''))
        listing['items'] = [
            obj for obj in listing['items']
            if all(label_term_matches(t, (obj.get('metadata') or {}).get('labels') or {}) for t in labels)
            if all(field_term_matches(t, obj) for t in fields)
        ]
        listing['metadata'] = {'resourceVersion': str(self._version)}
        return listing

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        return self._live(request.resource, request.namespace, request.name)

    # Object bookkeeping.

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _live(self, resource: Any, namespace: str | None, name: str) -> dict:
        key = (resource, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            raise not_found(resource, name)
        return copy.deepcopy(self._objects[key].raw)

    def _prepare_create(self, request: kmock.Request) -> None:
        obj = request.data
        meta = obj.setdefault('metadata', {})
        if request.namespace is not None:
            meta['namespace'] = request.namespace
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_version(), generation=1,
                    creationTimestamp=datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ'))
        obj.pop('status', None)
        if request.resource == PODS:
            obj['status'] = {'phase': 'Pending'}
        if request.resource == DEPLOYMENTS:
            obj.setdefault('spec', {}).setdefault('replicas', 1)

    async def _commit(self, resource: Any, old: dict, new: dict, subresource: str | None) -> dict:
        """Store ``new`` as the next version of ``old`` the way the API server would."""
        if subresource == 'status':
            new = {**old, 'status': new.get('status')}
        elif 'status' in old:
            new['status'] = old['status']
        else:
            new.pop('status', None)
        meta = new.setdefault('metadata', {})
        for immutable in ('name', 'namespace', 'uid', 'creationTimestamp'):
            if immutable in old['metadata']:
                meta[immutable] = old['metadata'][immutable]
        meta['generation'] = old['metadata'].get('generation', 1) + (new.get('spec') != old.get('spec'))
        meta['resourceVersion'] = self._next_version()
        key = (resource, old['metadata'].get('namespace'), old['metadata']['name'])
        self._objects[key].history.append(new)
        await self._buses[resource].put({'type': 'MODIFIED', 'object': copy.deepcopy(new)})
        return new

    def _check_version(self, request: kmock.Request, current: dict) -> None:
        wanted = wanted_version(request)
        if wanted is not None and wanted != current['metadata'].get('resourceVersion'):
            raise conflict(request.resource, request.name)

    async def _patch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            current = self._live(request.resource, request.namespace, request.name)
            self._check_version(request, current)
            patched = apply_patch(current, request)
            stored = await self._commit(request.resource, current, patched, request.subresource)
        return aiohttp.web.json_response(stored)

    # deployments/scale

    @staticmethod
    def _scale_of(deployment: dict) -> dict:
        meta = deployment['metadata']
        return {
            'kind': 'Scale',
            'apiVersion': 'autoscaling/v1',
            'metadata': {k: meta[k] for k in ('name', 'namespace', 'uid', 'resourceVersion', 'creationTimestamp') if k in meta},
            'spec': {'replicas': deployment['spec'].get('replicas', 1)},
            'status': {
                'replicas': (deployment.get('status') or {}).get('replicas', 0),
                'selector': selector_string(deployment['spec'].get('selector') or {}),
            },
        }

    async def _scale(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            deployment = self._live(DEPLOYMENTS, request.namespace, request.name)
            scale = self._scale_of(deployment)
            if request.method == 'GET':
                return aiohttp.web.json_response(scale)
            if request.method not in ('PATCH', 'PUT'):
                raise status_error(405, 'MethodNotAllowed', f'{request.method} is not supported on scale')
            self._check_version(request, deployment)
            wanted = apply_patch(scale, request) if request.method == 'PATCH' else request.data
            replicas = ((wanted or {}).get('spec') or {}).get('replicas')
            if not isinstance(replicas, int) or replicas < 0:
                raise status_error(422, 'Invalid', f'Scale.autoscaling "{request.name}" is invalid: '
                                                   f'spec.replicas: Invalid value: {replicas!r}')
            changed = copy.deepcopy(deployment)
            changed['spec']['replicas'] = replicas
            stored = await self._commit(DEPLOYMENTS, deployment, changed, None)
        return aiohttp.web.json_response(self._scale_of(stored))

    # pods/eviction

    async def _evict(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            pod = self._live(PODS, request.namespace, request.name)
            body_name = ((request.data or {}).get('metadata') or {}).get('name')
            if body_name not in (None, request.name):
                raise status_error(400, 'BadRequest', 'name in URL does not match name in Eviction object')
            self._check_budget(pod)
            key = (PODS, request.namespace, request.name)
            self._objects[key].delete()
            await self._buses[PODS].put({'type': 'DELETED', 'object': pod})
        success = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success', 'code': 201}
        return aiohttp.web.json_response(success, status=201)

    def _objects_of(self, resource: Any, namespace: str) -> list[dict]:
        return [
            copy.deepcopy(obj.raw) for (res, ns, _), obj in self._objects.items()
            if res == resource and ns == namespace and not obj.deleted
        ]

    def _check_budget(self, pod: dict) -> None:
        """The API server's eviction check, with the disruption controller's arithmetic inline."""
        if (pod.get('status') or {}).get('phase') in ('Succeeded', 'Failed', 'Pending'):
            return  # not running: evicting it disrupts nothing
        namespace, labels = pod['metadata']['namespace'], pod['metadata'].get('labels') or {}
        pdbs = [pdb for pdb in self._objects_of(PDBS, namespace)
                if label_selector_matches(pdb['spec'].get('selector') or {}, labels)]
        if len(pdbs) > 1:
            raise status_error(500, 'InternalError', 'This pod has more than one PodDisruptionBudget, '
                                                     'which the eviction subresource does not support.')
        if not pdbs:
            return
        pdb = pdbs[0]
        selected = [p for p in self._objects_of(PODS, namespace)
                    if label_selector_matches(pdb['spec'].get('selector') or {}, p['metadata'].get('labels') or {})]
        healthy = sum(1 for p in selected if pod_ready(p) and not p['metadata'].get('deletionTimestamp'))
        if 'minAvailable' in pdb['spec']:
            desired = scaled(pdb['spec']['minAvailable'], len(selected))
        else:
            desired = len(selected) - scaled(pdb['spec'].get('maxUnavailable', 0), len(selected))
        allowed = healthy - desired if pod_ready(pod) else (1 if healthy >= desired else 0)
        if allowed <= 0:
            cause = {'reason': 'DisruptionBudget',
                     'message': f"The disruption budget {pdb['metadata']['name']} needs {desired} "
                                f'healthy pods and has {healthy} currently'}
            raise status_error(429, 'TooManyRequests',
                               "Cannot evict pod as it would violate the pod's disruption budget.",
                               {'causes': [cause]})

    # Test controls.

    async def _apply_concurrent_write(self, request: kmock.Request) -> None:
        object_path = '/'.join(request.url.path.split('/')[:(-1 if request.subresource else None)])
        patch = self._pending_writes.pop(object_path, None)
        if patch is None:
            return
        async with self._lock:
            current = self._live(request.resource, request.namespace, request.name)
            await self._commit(request.resource, current, merge_patch(current, patch), None)

    async def _control(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if path == '/_standin/requests' and request.method == 'GET':
            served = [{'method': str(r.method.value), 'path': r.url.path, 'query': r.url.query_string}
                      for r in self._requests if not r.url.path.startswith('/_standin/')]
            return aiohttp.web.json_response(served)
        if path == '/_standin/concurrent-write' and request.method == 'POST':
            self._pending_writes[request.data['path'].rstrip('/')] = request.data['patch']
            return aiohttp.web.json_response({'armed': request.data['path']})
        raise status_error(404, 'NotFound', f'no stand-in control at {request.method} {path}')


async def serve(host: str, port: int, exit_on_stdin_eof: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if exit_on_stdin_eof:
        loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1(4096) or stop.set())
    async with KlaxonKubernetes() as emulator, kmock.Server(emulator, host=host, port=port) as server:
        print(f'READY {server.port}', flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port (printed on READY)')
    parser.add_argument('--exit-on-stdin-eof', action='store_true', help='stop when the parent closes stdin')
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.exit_on_stdin_eof))


if __name__ == '__main__':
    main()
