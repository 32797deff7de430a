"""A fake Hugging Face Hub on 127.0.0.1 for tests of huggingface_hub's real upload (and download) code.

Use the ``fake_hub`` fixture of ``conftest.py`` (it starts a :class:`FakeHub` and points huggingface_hub, datasets and
transformers at it), or ``with FakeHub() as hub: ...`` and pass ``endpoint=hub.url`` / ``token=TOKEN`` yourself.

The fake implements, in memory, only the HTTP endpoints that huggingface_hub 2.x calls (found by logging its requests)
for ``create_repo`` + ``upload_folder`` / ``create_commit`` (what ``push_folder_to_hub``, ``push_labels_to_hub`` and
``transformers.Trainer.push_to_hub`` use), and for reading a repo back (``repo_info``, ``list_repo_tree``,
``hf_hub_download``: what ``datasets.load_dataset("user/name")`` uses). ``{kind}`` is ``models`` or ``datasets``;
the git and file URLs of a dataset repo start with ``/datasets/``, those of a model repo with nothing:

- ``POST /api/repos/create``                              create a repo (409 + its url if it exists)
- ``POST /api/validate-yaml``                             README.md front matter check (parsed with PyYAML)
- ``POST /api/{kind}/{repo}/preupload/{rev}``             per file: "regular" (inline) or "lfs" upload mode
- ``POST [/datasets]/{repo}.git/info/lfs/objects/batch``  LFS batch API, "basic" transfer (no actions if stored)
- ``PUT  /_lfs/upload/{oid}``                              LFS object upload (sha256 checked against the oid)
- ``POST /_lfs/verify``                                   LFS verify (oid + size)
- ``POST /api/{kind}/{repo}/commit/{rev}``                NDJSON commit: header, base64 "file", "lfsFile" pointers
- ``GET  /api/{kind}/{repo}[/revision/{rev}]``            repo info: sha, siblings, private
- ``GET  /api/{kind}/{repo}/tree/{rev}[/{path}]``         the files and folders under ``path`` (``?recursive=``)
- ``POST /api/{kind}/{repo}/paths-info/{rev}``            info of the given paths
- ``GET|HEAD [/datasets]/{repo}/resolve/{rev}/{path}``    a file's bytes (with the ETag/X-Repo-Commit headers)

Repos are keyed like their URLs: ``repos["alice/model"]`` for a model, ``repos["datasets/alice/labels"]`` for a
dataset. Every /api and LFS batch call must carry the bearer token :data:`TOKEN`. Any other request gets a 404 and is
recorded in ``unhandled`` (the fixture asserts there were none). huggingface_hub uses Xet storage instead of LFS when
``hf_xet`` is installed; the fake does not speak Xet's CAS protocol, so the fixture switches Xet off
(``constants.HF_HUB_DISABLE_XET``) and the LFS path is covered: preupload, batch, upload, verify, commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["TOKEN", "LFS_SUFFIXES", "FakeHub", "git_blob_oid"]

TOKEN = "hf_fake_write_token"
#: Files the fake's preupload sends through LFS (besides any file whose first bytes hold a NUL byte).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".parquet", ".arrow")
#: The URL kinds of the repo types the fake holds, and the prefix of their repo keys / git and file URLs.
KINDS = {"models": "", "datasets": "datasets/"}
_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_KIND = r"(?P<kind>models|datasets)"
_PREFIX = r"(?P<prefix>datasets/)?"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's bytes, as the Hub reports for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """An in-memory Hub: ``repos[key][path] = bytes``, ``lfs[oid] = bytes``, ``requests`` = [(method, path)].

    ``key`` is ``"user/name"`` for a model repo and ``"datasets/user/name"`` for a dataset repo. Also kept per key:
    ``inline_paths`` / ``lfs_paths`` (how each file was committed), ``commits`` (the commit headers, in order),
    ``heads`` (the current commit oid), ``visibility`` (what ``create_repo`` asked for).
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_puts: list[str] = []  # oids uploaded, in order
        self.inline_paths: dict[str, set[str]] = {}  # repo -> paths committed inline (base64)
        self.lfs_paths: dict[str, set[str]] = {}  # repo -> paths committed as LFS pointers
        self.commits: dict[str, list[dict]] = {}  # repo -> commit headers
        self.heads: dict[str, str] = {}  # repo -> oid of its last commit
        self.visibility: dict[str, str | None] = {}  # repo -> "private" / "public" / None (the Hub's default)
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.auth_failures: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def called(self) -> set[tuple[str, str]]:
        """The distinct ``(method, path)`` requests so far, with LFS oids replaced by ``{oid}``."""
        return {(m, re.sub(r"[0-9a-f]{64}", "{oid}", p)) for m, p in self.requests}

    # -- request handling -------------------------------------------------------------------------------------------

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()  # CRLF after each chunk
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload=None, headers: dict | None = None) -> None:
                if isinstance(payload, bytes):
                    body, content_type = payload, "application/octet-stream"
                else:
                    body, content_type = (b"" if payload is None else json.dumps(payload).encode()), "application/json"
                self.send_response(status)
                headers = {"Content-Type": content_type, **(headers or {})}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _dispatch(self) -> None:
                body = self._body()
                url = urlsplit(self.path)
                path, query = url.path, parse_qs(url.query)
                with hub.lock:
                    hub.requests.append((self.command, unquote(path)))
                needs_auth = path.startswith("/api/") or path.endswith("/info/lfs/objects/batch")
                if needs_auth and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    hub.auth_failures.append(path)
                    return self._send(401, {"error": "Invalid credentials"})
                status, payload, headers = hub.route(self.command, path, body, query)
                self._send(status, payload, headers)

            do_GET = do_POST = do_PUT = do_HEAD = _dispatch

        return Handler

    def route(self, method: str, path: str, body: bytes, query: dict | None = None) -> tuple[int, object, dict | None]:
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", rf"/api/{_KIND}/{_REPO}/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/_lfs/upload/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("POST", r"/_lfs/verify", self.lfs_verify),
            ("POST", rf"/api/{_KIND}/{_REPO}/commit/(?P<rev>[^/]+)", self.commit),
            ("GET", rf"/api/{_KIND}/{_REPO}(?:/revision/(?P<rev>[^/]+))?", self.repo_info),
            ("GET", rf"/api/{_KIND}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self.tree),
            ("POST", rf"/api/{_KIND}/{_REPO}/paths-info/(?P<rev>[^/]+)", self.paths_info),
            ("GET", rf"/{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
            ("HEAD", rf"/{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                kwargs = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                if "repo" in kwargs:
                    kind, prefix = kwargs.pop("kind", None), kwargs.pop("prefix", None)
                    key = (KINDS[kind] if kind else prefix or "") + kwargs.pop("repo")
                    if key not in self.repos:
                        return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
                    kwargs["repo"] = key
                    if kwargs.get("rev") not in (None, "main", self.heads[key]):
                        return 404, {"error": f"revision {kwargs['rev']} not found"}, {"X-Error-Code": "RevisionNotFound"}
                    kwargs.pop("rev", None)
                if handler == self.tree:
                    kwargs["query"] = query or {}
                return handler(body, **kwargs)
        with self.lock:
            self.unhandled.append((method, path))
        return 404, {"error": f"fake hub: no route for {method} {path}"}, None

    # -- writing ----------------------------------------------------------------------------------------------------

    def create_repo(self, body: bytes):
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "dataset"):
            return 400, {"error": "the fake hub only holds model and dataset repos"}, None
        repo_id = f"{payload.get('organization') or 'fake-user'}/{payload['name']}"
        key = KINDS[f"{repo_type}s"] + repo_id
        url = f"{self.url}/{key}"
        with self.lock:
            if key in self.repos:
                return 409, {"error": f"You already created this {repo_type} repo", "url": url}, None
            self.repos[key] = {}
            self.visibility[key] = payload.get("visibility")
            self.heads[key] = hashlib.sha1(f"{key}:0".encode()).hexdigest()
        return 200, {"url": url, "name": repo_id}, None

    def validate_yaml(self, body: bytes):
        content = json.loads(body)["content"]
        match = re.match(r"---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(match[1]) if match else None
        except yaml.YAMLError as err:
            return 400, {"errors": [{"message": str(err)}], "warnings": []}, None
        warnings = [] if isinstance(meta, dict) else [{"message": "empty or missing metadata"}]
        return 200, {"errors": [], "warnings": warnings}, None

    def preupload(self, body: bytes, repo: str):
        files = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or b"\x00" in sample
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return 200, {"files": files}, None

    def lfs_batch(self, body: bytes, repo: str):
        payload = json.loads(body)
        assert payload["operation"] == "upload" and "basic" in payload["transfers"]
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:  # already stored objects get no actions: the client skips them
                entry["authenticated"] = True
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs/upload/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/_lfs/verify"},
                }
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def lfs_upload(self, body: bytes, oid: str):
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "sha256 of the uploaded bytes does not match the oid"}, None
        with self.lock:
            self.lfs[oid] = body
            self.lfs_puts.append(oid)
        return 200, None, None

    def lfs_verify(self, body: bytes):
        obj = json.loads(body)
        if obj["oid"] not in self.lfs or len(self.lfs[obj["oid"]]) != obj["size"]:
            return 404, {"error": "object not found"}, None
        return 200, {}, None

    def commit(self, body: bytes, repo: str):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return 400, {"error": "the commit must start with a header line"}, None
        changes, inline, lfs = {}, set(), set()
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                assert value["encoding"] == "base64"
                changes[value["path"]] = base64.b64decode(value["content"])
                inline.add(value["path"])
            elif line["key"] == "lfsFile":
                blob = self.lfs.get(value["oid"])
                if blob is None or len(blob) != value["size"] or value["algo"] != "sha256":
                    return 400, {"error": f"LFS object for {value['path']} was not uploaded"}, None
                changes[value["path"]] = blob
                lfs.add(value["path"])
            else:
                return 400, {"error": f"fake hub: unsupported commit operation {line['key']}"}, None
        with self.lock:
            self.repos[repo].update(changes)
            self.inline_paths.setdefault(repo, set()).update(inline)
            self.lfs_paths.setdefault(repo, set()).update(lfs)
            self.commits.setdefault(repo, []).append(lines[0]["value"])
            oid = hashlib.sha1(f"{repo}:{len(self.commits[repo])}".encode()).hexdigest()
            self.heads[repo] = oid
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}, None

    # -- reading ----------------------------------------------------------------------------------------------------

    def _file_entry(self, repo: str, path: str) -> dict:
        data = self.repos[repo][path]
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}
        if path in self.lfs_paths.get(repo, ()):
            sha = hashlib.sha256(data).hexdigest()
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        return entry

    def _entries(self, repo: str, sub: str, recursive: bool) -> list[dict] | None:
        """Files and folders directly under ``sub`` (all below it with ``recursive``); None if ``sub`` is no folder."""
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        files = sorted(p for p in self.repos[repo] if p.startswith(prefix))
        if prefix and not files:
            return None
        entries, folders = [], set()
        for path in files:
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": git_blob_oid(folder.encode())})
            if recursive or len(parts) == 1:
                entries.append(self._file_entry(repo, path))
        return entries

    def repo_info(self, body: bytes, repo: str):
        repo_id = repo.removeprefix("datasets/")
        siblings = [{"rfilename": p, "size": len(d)} for p, d in sorted(self.repos[repo].items())]
        info = {"id": repo_id, "_id": repo_id, "sha": self.heads[repo], "private": self.visibility[repo] == "private",
                "siblings": siblings, "tags": [], "downloads": 0, "likes": 0,
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"}
        return 200, info, None

    def tree(self, body: bytes, repo: str, sub: str | None, query: dict):
        recursive = (query.get("recursive") or ["false"])[0].lower() == "true"
        entries = self._entries(repo, sub or "", recursive)
        if entries is None:
            return 404, {"error": f"{sub} not found"}, {"X-Error-Code": "EntryNotFound"}
        return 200, entries, None

    def paths_info(self, body: bytes, repo: str):
        paths = parse_qs(body.decode()).get("paths") if not body.startswith(b"{") else json.loads(body)["paths"]
        out = []
        for path in paths or []:
            path = path.strip("/")
            if path in self.repos[repo]:
                out.append(self._file_entry(repo, path))
            elif self._entries(repo, path, recursive=False):
                out.append({"type": "directory", "path": path, "oid": git_blob_oid(path.encode())})
        return 200, out, None

    def resolve(self, body: bytes, repo: str, file: str):
        data = self.repos[repo].get(file)
        if data is None:
            return 404, {"error": f"{file} not found"}, {"X-Error-Code": "EntryNotFound"}
        entry = self._file_entry(repo, file)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": self.heads[repo]}
        if "lfs" in entry:
            headers["X-Linked-Etag"], headers["X-Linked-Size"] = f'"{etag}"', str(len(data))
        return 200, data, headers
