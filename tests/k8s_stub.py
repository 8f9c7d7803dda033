"""A local stub of the Kubernetes API server: the apps/v1 endpoints the KubernetesScaler
uses, with injectable 409/5xx answers and a record of every (verb, resource) asked."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = re.compile(r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)(?P<scale>/scale)?$")


class StubAPIServer:
    def __init__(self, namespace="default", name="sandbox", replicas=1, ready_delay_s=0.3, allowed=None):
        self.ns, self.name, self.spec = namespace, name, replicas
        self.allowed = allowed  # {(verb, resource)} an RBAC Role grants; None: everything
        self.ready, self.ready_delay = replicas, ready_delay_s
        self.changed_at = time.monotonic()
        self.faults: list[int] = []  # statuses to answer next, one per request
        self.retry_after: str | None = None  # the Retry-After header of those answers
        self.calls: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code, obj, headers=()):
                body = json.dumps(obj).encode()
                self.send_response(code)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, verb):
                m = PATH.match(self.path.split("?")[0])
                resource = "deployments/scale" if m and m["scale"] else "deployments"
                stub.calls.append((verb, resource))
                if stub.allowed is not None and (verb, resource) not in stub.allowed:
                    return self._reply(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                                             "reason": "Forbidden",
                                             "message": f"cannot {verb} resource {resource} (RBAC)"})
                if stub.faults:
                    code = stub.faults.pop(0)
                    return self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                              "code": code, "reason": "Conflict" if code == 409 else "ServiceUnavailable"},
                                       [("Retry-After", stub.retry_after)] if stub.retry_after else ())
                if not m or m["ns"] != stub.ns or m["name"] != stub.name:
                    return self._reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                if verb == "patch":
                    if not m["scale"]:
                        return self._reply(405, {"kind": "Status", "code": 405})
                    length = int(self.headers.get("Content-Length", 0))
                    body = json.loads(self.rfile.read(length))
                    stub.spec = int(body["spec"]["replicas"])
                    stub.changed_at = time.monotonic()
                stub._settle()
                if m["scale"]:
                    return self._reply(200, stub.scale())
                return self._reply(200, stub.deployment())

            def do_GET(self):
                self._handle("get")

            def do_PATCH(self):
                self._handle("patch")

            def do_PUT(self):
                self._handle("update")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _settle(self):
        if time.monotonic() - self.changed_at >= self.ready_delay:
            self.ready = self.spec

    def scale(self):
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": self.name, "namespace": self.ns},
                "spec": {"replicas": self.spec}, "status": {"replicas": self.spec}}

    def deployment(self):
        return {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": self.name, "namespace": self.ns},
                "spec": {"replicas": self.spec, "selector": {"matchLabels": {"app": self.name}},
                         "template": {"metadata": {"labels": {"app": self.name}}, "spec": {"containers": []}}},
                "status": {"replicas": self.spec, "readyReplicas": self.ready}}

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
