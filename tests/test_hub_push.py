"""Pushing to the Hub through huggingface_hub's real upload code, against a fake Hub on 127.0.0.1.

The fake implements, in memory, only the HTTP endpoints huggingface_hub 2.x calls for ``create_repo`` +
``upload_folder`` (found by logging its requests):

- ``POST /api/repos/create``                              create a repo (409 + its url if it exists)
- ``POST /api/validate-yaml``                             README.md front matter check (parsed with PyYAML)
- ``POST /api/models/{repo}/preupload/{rev}``             per file: "regular" (inline) or "lfs" upload mode
- ``POST /{repo}.git/info/lfs/objects/batch``             LFS batch API, "basic" transfer (no actions if stored)
- ``PUT  /_lfs/upload/{oid}``                              LFS object upload (sha256 checked against the oid)
- ``POST /_lfs/verify``                                   LFS verify (oid + size)
- ``POST /api/models/{repo}/commit/{rev}``                NDJSON commit: header, base64 "file", "lfsFile" pointers

Every /api and LFS batch call must carry the test's bearer token. Any other request gets a 404 and is recorded, and
the tests assert there were none. huggingface_hub uses Xet storage instead of LFS when ``hf_xet`` is installed;
the fake does not speak Xet's CAS protocol, so the tests switch Xet off (``constants.HF_HUB_DISABLE_XET``) and
cover the LFS path: preupload, batch, upload, verify, commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from huggingface_hub import constants
from transformers import AutoModelForCausalLM, GPT2ForSequenceClassification, GPT2LMHeadModel

from hf_prefs.hub import push_folder_to_hub, push_run_to_hub
from hf_prefs.model_cards import render_policy_card, write_model_card
from hf_prefs.models.reward_model import set_reward_normalization
from conftest import tiny_gpt2_config

TOKEN = "hf_fake_write_token"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# A ~90 KB GPT-2: its safetensors still goes through LFS like a real one.
TINY = dict(vocab_size=256, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=255, eos_token_id=255)


class FakeHub:
    """An in-memory Hub: ``repos[repo_id][path] = bytes``, ``lfs[oid] = bytes``, ``requests`` = [(method, path)]."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_puts: list[str] = []  # oids uploaded, in order
        self.inline_paths: dict[str, set[str]] = {}  # repo -> paths committed inline (base64)
        self.lfs_paths: dict[str, set[str]] = {}  # repo -> paths committed as LFS pointers
        self.commits: dict[str, list[dict]] = {}  # repo -> commit headers
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
                body = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _dispatch(self) -> None:
                body = self._body()
                path = self.path.split("?")[0]
                with hub.lock:
                    hub.requests.append((self.command, path))
                needs_auth = path.startswith("/api/") or path.endswith("/info/lfs/objects/batch")
                if needs_auth and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    hub.auth_failures.append(path)
                    return self._send(401, {"error": "Invalid credentials"})
                status, payload, headers = hub.route(self.command, path, body)
                self._send(status, payload, headers)

            do_GET = do_POST = do_PUT = do_HEAD = _dispatch

        return Handler

    def route(self, method: str, path: str, body: bytes) -> tuple[int, object, dict | None]:
        repo = r"(?P<repo>[\w.-]+/[\w.-]+)"
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", rf"/api/models/{repo}/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", rf"/{repo}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/_lfs/upload/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("POST", r"/_lfs/verify", self.lfs_verify),
            ("POST", rf"/api/models/{repo}/commit/(?P<rev>[^/]+)", self.commit),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                if "repo" in match.groupdict() and match["repo"] not in self.repos:
                    return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
                return handler(body, **match.groupdict())
        with self.lock:
            self.unhandled.append((method, path))
        return 404, {"error": f"fake hub: no route for {method} {path}"}, None

    def create_repo(self, body: bytes):
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            return 400, {"error": "the fake hub only holds model repos"}, None
        repo_id = f"{payload.get('organization') or 'fake-user'}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        with self.lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": url}, None
            self.repos[repo_id] = {}
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

    def preupload(self, body: bytes, repo: str, rev: str):
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

    def commit(self, body: bytes, repo: str, rev: str):
        if rev != "main":
            return 404, {"error": f"revision {rev} not found"}, {"X-Error-Code": "RevisionNotFound"}
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
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}, None


@pytest.fixture
def fake_hub(monkeypatch):
    # conftest sets HF_HUB_OFFLINE=1 and huggingface_hub caches it at import: undo both for this test only.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # The fake speaks LFS, not Xet's CAS protocol (see the module docstring).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as hub:
        yield hub
    assert hub.unhandled == [], f"requests the fake hub does not implement: {hub.unhandled}"
    assert hub.auth_failures == [], f"requests without the token: {hub.auth_failures}"


def _tiny_policy_folder(folder: Path) -> GPT2LMHeadModel:
    """A saved tiny GPT-2 policy with a value head file, a README card, and a checkpoint folder to leave behind."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(**TINY)).eval()
    model.save_pretrained(folder)
    safetensors.torch.save_file({"weight": torch.randn(1, 32), "bias": torch.zeros(1)}, folder / "value_head.safetensors")
    (folder / "value_head_config.json").write_text(json.dumps({"value_model": "shared"}))
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"\x00" * 64)
    write_model_card(folder, _policy_card())
    return model


def _policy_card(**overrides) -> str:
    fields = dict(base_model="gpt2", task="sentiment", num_labels=12, reward_gain=1.5, reward_bias=-0.25,
                  kl_final=5.5, beta_final=0.2, kl_target=6.0, temperature=0.7, response_length=24,
                  known_reward="VADER log-odds")
    fields.update(overrides)
    return render_policy_card(**fields)


def _local_files(folder: Path, skip: tuple[str, ...] = ("checkpoint-",)) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip)
    }


def test_push_folder_uploads_every_file_byte_identical(fake_hub, tmp_path):
    folder = tmp_path / "policy"
    model = _tiny_policy_folder(folder)

    url = push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, private=True,
                             commit_message="first push", endpoint=fake_hub.url)

    assert url.startswith(f"{fake_hub.url}/alice/tiny-policy/commit/")
    local = _local_files(folder)
    assert {"README.md", "config.json", "model.safetensors", "value_head.safetensors"} <= set(local)
    remote = fake_hub.repos["alice/tiny-policy"]
    assert set(remote) == set(local)  # the checkpoint folder stayed behind
    for path, data in local.items():
        assert hashlib.sha256(remote[path]).hexdigest() == hashlib.sha256(data).hexdigest(), path
    # Weights went through LFS (batch + PUT + verify), text inline in the commit.
    assert fake_hub.lfs_paths["alice/tiny-policy"] == {"model.safetensors", "value_head.safetensors"}
    assert {"README.md", "config.json", "generation_config.json"} <= fake_hub.inline_paths["alice/tiny-policy"]
    assert len(fake_hub.lfs_puts) == 2
    assert fake_hub.commits["alice/tiny-policy"] == [{"summary": "first push", "description": ""}]
    called = {(m, re.sub(r"[0-9a-f]{64}", "{oid}", p)) for m, p in fake_hub.requests}
    assert called == {
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/alice/tiny-policy/preupload/main"),
        ("POST", "/alice/tiny-policy.git/info/lfs/objects/batch"),
        ("PUT", "/_lfs/upload/{oid}"),
        ("POST", "/_lfs/verify"),
        ("POST", "/api/models/alice/tiny-policy/commit/main"),
    }

    # What the Hub holds loads back into the same model.
    download = tmp_path / "download"
    for path, data in remote.items():
        (download / path).parent.mkdir(parents=True, exist_ok=True)
        (download / path).write_bytes(data)
    reloaded = AutoModelForCausalLM.from_pretrained(download).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_push_again_to_existing_repo_skips_stored_lfs_objects(fake_hub, tmp_path):
    folder = tmp_path / "policy"
    _tiny_policy_folder(folder)
    push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    puts_after_first = len(fake_hub.lfs_puts)
    write_model_card(folder, _policy_card(kl_final=4.25))  # new card, same weights

    url = push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url, commit_message="update")

    assert url.startswith(f"{fake_hub.url}/alice/tiny-policy/commit/")
    assert ("POST", "/api/repos/create") in fake_hub.requests  # 409 from the Hub, accepted by exist_ok=True
    assert len(fake_hub.lfs_puts) == puts_after_first  # the weights were already stored: not uploaded again
    assert "| final KL(π, ρ) (nats) | 4.25 |" in fake_hub.repos["alice/tiny-policy"]["README.md"].decode()
    assert [c["summary"] for c in fake_hub.commits["alice/tiny-policy"]] == [
        "Upload model trained with hf_prefs", "update"]


@pytest.mark.parametrize("policy_subdir", ["policy", "."])
def test_push_run_to_hub_pushes_policy_and_reward_model_with_cards(fake_hub, tmp_path, policy_subdir):
    run = tmp_path / "run"
    policy = _tiny_policy_folder(run / policy_subdir)
    (run / policy_subdir / "README.md").unlink()  # the card is rendered by push_run_to_hub below
    torch.manual_seed(1)
    cfg = tiny_gpt2_config(**TINY, num_labels=1, pad_token_id=255)
    rm = GPT2ForSequenceClassification(cfg)
    set_reward_normalization(rm, 2.5, -0.75)
    rm.save_pretrained(run / "reward_model")
    common = dict(base_model="gpt2", task="sentiment", num_labels=12, reward_gain=2.5, reward_bias=-0.75,
                  known_reward="VADER log-odds")

    urls = push_run_to_hub(
        run, "alice/run", token=TOKEN, endpoint=fake_hub.url, policy_subdir=policy_subdir,
        policy_card_fields=dict(common, kl_final=5.5, beta_final=0.2, kl_target=6.0, temperature=0.7, response_length=24),
        reward_model_card_fields=dict(common, metrics={"eval_accuracy": 0.5}),
    )

    assert set(urls) == {"policy", "reward_model"}
    assert urls["policy"].startswith(f"{fake_hub.url}/alice/run/commit/")
    assert urls["reward_model"].startswith(f"{fake_hub.url}/alice/run-reward-model/commit/")
    policy_repo, rm_repo = fake_hub.repos["alice/run"], fake_hub.repos["alice/run-reward-model"]
    assert policy_repo == _local_files(run / policy_subdir, skip=("checkpoint-", "reward_model/"))
    assert rm_repo == _local_files(run / "reward_model")
    assert not any(p.startswith("reward_model/") for p in policy_repo)  # not pushed twice with policy_subdir="."
    assert json.loads(rm_repo["config.json"])["hf_prefs_reward_gain"] == 2.5

    policy_meta = yaml.safe_load(policy_repo["README.md"].decode().split("---")[1])
    rm_meta = yaml.safe_load(rm_repo["README.md"].decode().split("---")[1])
    assert {"ppo", "hf-prefs"} <= set(policy_meta["tags"]) and "reward-model" not in policy_meta["tags"]
    assert {"reward-model", "hf-prefs"} <= set(rm_meta["tags"]) and "ppo" not in rm_meta["tags"]
    # Each card points at the other repo and loads from its own.
    policy_card, rm_card = policy_repo["README.md"].decode(), rm_repo["README.md"].decode()
    assert "https://huggingface.co/alice/run-reward-model" in policy_card
    assert 'AutoModelForCausalLM.from_pretrained("alice/run")' in policy_card
    assert "https://huggingface.co/alice/run)" in rm_card
    assert 'load_reward_model("alice/run-reward-model")' in rm_card
    assert policy.config.n_embd == 32  # the fixture model is the one pushed (sanity)


def test_push_fails_before_any_request(fake_hub, tmp_path, monkeypatch):
    folder = tmp_path / "policy"
    _tiny_policy_folder(folder)
    (folder / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="no README.md model card"):
        push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        push_folder_to_hub(tmp_path / "missing", "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(ValueError):
        push_folder_to_hub(folder, "not/a/valid/id", token=TOKEN, endpoint=fake_hub.url, require_model_card=False)
    # A run missing its reward model folder: nothing is pushed (not even the policy).
    write_model_card(folder, _policy_card())
    with pytest.raises(FileNotFoundError, match="reward_model_subdir"):
        push_run_to_hub(tmp_path, "alice/run", token=TOKEN, endpoint=fake_hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    assert fake_hub.requests == []
