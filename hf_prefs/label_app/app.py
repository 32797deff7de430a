"""The labeling page (Gradio): a query and its K samples in random order; the labeler picks the best.

Keys: ``1``..``K`` pick the sample shown at that position, ``S`` skips, ``U`` undoes the last answer.
The page confirms a pick only after :meth:`LabelQueue.submit` returned, i.e. after the label was
appended and fsync'd. Each pick carries the id of the lease the labeler was looking at, so a stale
click (an expired or replaced view, a double key press) is refused instead of labeling an item the
labeler never saw. Shown positions are mapped back to stored sample indices through the lease's order.

Identity: with auth (required whenever the page is shared: a host other than loopback, or
``share=True``) the labeler is the login name; on a local page it is the name field, prefilled from
``?labeler=NAME`` or the server's default.

Needs the ``label`` extra: ``pip install 'hf-prefs[label]'``.
"""

from __future__ import annotations

import dataclasses
import html
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
try:
    import gradio as gr
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the labeling app needs Gradio: pip install 'hf-prefs[label]'") from exc

from hf_prefs.labels.queue import LabelQueue, LabelRequestError, Lease, check_name

__all__ = ["build_app", "serve", "make_auth", "is_loopback", "MAX_K", "KEYBOARD_JS"]

logger = logging.getLogger(__name__)

#: Positions the page can show (keys 1..9).
MAX_K = 9

#: Environment variable holding the shared password (keeps it off the command line).
PASSWORD_ENV = "HF_PREFS_LABEL_PASSWORD"

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

#: Keyboard shortcuts, injected in the page head: 1..9 pick, S skip, U undo (not while typing in a field).
KEYBOARD_JS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  let id = null;
  if (/^[1-9]$/.test(e.key)) id = 'pick-' + e.key;
  else if (e.key === 's' || e.key === 'S') id = 'skip-btn';
  else if (e.key === 'u' || e.key === 'U') id = 'undo-btn';
  if (!id) return;
  const el = document.getElementById(id);
  const btn = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
  if (btn && !btn.disabled && btn.offsetParent !== null) { e.preventDefault(); btn.click(); }
});
</script>
"""

CSS = """
.hp-query { background: #f1f5f9; border-left: 4px solid #64748b; padding: 12px 16px; border-radius: 6px;
            white-space: pre-wrap; font-size: 1.05rem; line-height: 1.5; }
.hp-label { font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.05em; color: #64748b; margin-bottom: 4px; }
.hp-card { border: 1px solid #cbd5e1; border-radius: 8px; padding: 12px 14px; min-height: 6rem; height: 100%; box-sizing: border-box;
           white-space: pre-wrap; font-size: 1.0rem; line-height: 1.5; background: #ffffff; }
.hp-num { display: inline-block; min-width: 1.6em; text-align: center; font-weight: 700; color: #ffffff;
          background: #2563eb; border-radius: 4px; margin-right: 8px; }
.hp-done { font-size: 1.1rem; padding: 24px; text-align: center; color: #166534; }
.hp-progress span { margin-right: 18px; white-space: nowrap; }
#status .hp-ok { color: #166534; } #status .hp-err { color: #b91c1c; }
"""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_auth(password: str | None = None, users: dict[str, str] | str | os.PathLike | None = None) -> Callable[[str, str], bool] | None:
    """A Gradio ``auth`` callable, or ``None`` when neither ``password`` nor ``users`` is given.

    ``password``: one shared password; any user name (letters, digits, ``_.@-``, at most 64) logs in,
    and that name is recorded as the labeler. ``users``: ``{name: password}`` or a file of
    ``name:password`` lines; only those names log in.
    """
    if users is not None and not isinstance(users, dict):
        table: dict[str, str] = {}
        for n, line in enumerate(Path(users).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                name, sep, pw = line.strip().partition(":")
                if not sep or not _USERNAME.match(name) or not pw:
                    raise ValueError(f"{users}:{n}: expected 'name:password' with a name of letters, digits or _.@-")
                table[name] = pw
        users = table
    if password is None and not users:
        return None
    if password is not None and not password:
        raise ValueError("the shared password is empty")

    def auth(username: str, pw: str) -> bool:
        if not isinstance(username, str) or not _USERNAME.match(username):
            return False
        if users and username in users:
            return hmac.compare_digest(users[username].encode(), (pw or "").encode())
        return password is not None and hmac.compare_digest(password.encode(), (pw or "").encode())

    return auth


def _card(position: int, text: str) -> str:
    return f'<div class="hp-card"><span class="hp-num">{position + 1}</span><span class="hp-text">{html.escape(text)}</span></div>'


def _progress_html(queue: LabelQueue, labeler: str) -> str:
    """The labeler's progress line: their counts, the queue's, and their agreement so far."""
    p = queue.progress(labeler)
    a = queue.agreement(labeler)
    parts = [
        ("Labeler", html.escape(labeler)),
        ("Labeled", p["mine"]),
        ("Skipped", p["skipped"]),
        ("Left for you", p["left"]),
        ("Queue", f"{p['done']}/{p['items']} items done"),
    ]
    if a["self_n"]:
        parts.append(("Self-agreement", f"{a['self_agree']}/{a['self_n']} ({100 * a['self_agree'] / a['self_n']:.0f}%)"))
    if a["cross_n"]:
        parts.append(("Agreement with others", f"{a['cross_agree']}/{a['cross_n']} ({100 * a['cross_agree'] / a['cross_n']:.0f}%)"))
    return '<div class="hp-progress">' + "".join(f"<span><b>{k}:</b> {v}</span>" for k, v in parts) + "</div>"


def _render(queue: LabelQueue, labeler: str, lease: Lease | None, message: str = "", error: bool = False) -> list[Any]:
    """Values of the page's outputs (see :class:`_Page`) showing ``lease`` (or the all-done note) to ``labeler``."""
    progress = _progress_html(queue, labeler)
    status = f'<span class="{"hp-err" if error else "hp-ok"}">{html.escape(message)}</span>' if message else ""
    if lease is None:
        query = '<div class="hp-done">All done: nothing is left for you to label. Reload the page when new items arrive.</div>'
        hidden = [gr.update(visible=False) for _ in range(MAX_K)]
        return [labeler, "", progress, status, query, *hidden, *[""] * MAX_K, *hidden]
    k = len(lease.samples)
    if k > MAX_K:
        query = f'<div class="hp-err">item {html.escape(lease.item_id)} has K={k} samples; this page shows at most {MAX_K}</div>'
        hidden = [gr.update(visible=False) for _ in range(MAX_K)]
        return [labeler, "", progress, status, query, *hidden, *[""] * MAX_K, *hidden]
    query = (
        f'<div class="hp-label">Query · item {html.escape(lease.item_id)}</div>'
        f'<div class="hp-query" data-lease="{lease.lease_id}" data-item="{html.escape(lease.item_id)}">{html.escape(lease.query)}</div>'
    )
    shown = lease.shown_samples
    visible = [gr.update(visible=p < k) for p in range(MAX_K)]
    cards = [_card(p, shown[p]) if p < k else "" for p in range(MAX_K)]
    return [labeler, lease.lease_id, progress, status, query, *visible, *cards, *[gr.update(visible=p < k) for p in range(MAX_K)]]


@dataclasses.dataclass
class _Page:
    """The page's components; :attr:`outputs` is the order :func:`_render` fills."""

    name: Any
    shown_lease: Any
    progress: Any
    status: Any
    query: Any
    cols: list[Any]
    cards: list[Any]
    buttons: list[Any]
    skip: Any
    undo: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.name, self.shown_lease, self.progress, self.status, self.query, *self.cols, *self.cards, *self.buttons]


def _layout(title: str, default_labeler: str, auth_enabled: bool) -> _Page:
    """Create the page's components (inside an open ``gr.Blocks``)."""
    gr.Markdown(
        f"## {html.escape(title)}\nRead the query, then pick the **best** continuation: click its button or press "
        "**1**–**K**. **S** skips the item, **U** undoes your last answer. Each pick is saved before it is confirmed below."
    )
    with gr.Row(equal_height=True):
        # with a login the labeler is the login name: no field to type another one
        name = gr.Textbox(label="Labeler", value=default_labeler, visible=not auth_enabled, scale=1, min_width=160, elem_id="labeler-name")
        with gr.Column(scale=5):
            progress = gr.HTML(elem_id="progress")
            status = gr.HTML(elem_id="status")
    query = gr.HTML(elem_id="query")
    cols, cards, buttons = [], [], []
    with gr.Row(equal_height=True):  # the K samples side by side ...
        for p in range(MAX_K):
            with gr.Column(visible=False, min_width=160) as col:
                cards.append(gr.HTML(elem_id=f"card-{p + 1}"))
            cols.append(col)
    with gr.Row():  # ... and their buttons in one line under them
        for p in range(MAX_K):
            buttons.append(gr.Button(f"{p + 1}: this one is best", variant="primary", visible=False, min_width=160, elem_id=f"pick-{p + 1}"))
    with gr.Row():
        skip = gr.Button("Skip (S)", elem_id="skip-btn", variant="secondary")
        undo = gr.Button("Undo last answer (U)", elem_id="undo-btn", variant="secondary")
    shown_lease = gr.Textbox(visible=False, elem_id="shown-lease")
    return _Page(name, shown_lease, progress, status, query, cols, cards, buttons, skip, undo)


def build_app(queue: LabelQueue, *, default_labeler: str = "local", auth_enabled: bool = False, title: str = "hf-prefs labeling"):
    """The Gradio ``Blocks`` of the labeling page for ``queue`` (launch it with :func:`serve`)."""

    def identity(request: gr.Request | None, typed: str | None) -> str:
        user = getattr(request, "username", None) if request is not None else None
        if user:
            return user
        if auth_enabled:
            raise gr.Error("log in first: this page requires a login")
        name = (typed or "").strip() or default_labeler
        try:
            return check_name(name, "labeler")
        except LabelRequestError as exc:
            raise gr.Error(str(exc)) from None

    def act(action: str, position: int | None, typed: str, shown_lease: str, request: gr.Request) -> list[Any]:
        labeler = identity(request, typed)
        try:
            if action == "undo":
                lease = queue.undo(labeler)
                return _render(queue, labeler, lease, f"Undid your last answer (item {lease.item_id}); pick again.")
            lease = queue.next_item(labeler)
            if lease is None:
                return _render(queue, labeler, None, "Nothing left to label.")
            if lease.lease_id != shown_lease:
                return _render(queue, labeler, lease, "The page was out of date (expired or changed); nothing was saved. Here is your current item.", True)
            if action == "skip":
                queue.skip(labeler, lease.item_id)
                message = f"Skipped item {lease.item_id}."
            else:
                rec = queue.submit(labeler, lease.item_id, lease.best_from_position(position), source="app")
                message = f"Saved: item {lease.item_id}, you picked #{position + 1} (label {rec['label_id'][:8]})."
            return _render(queue, labeler, queue.next_item(labeler), message)
        except LabelRequestError as exc:
            return _render(queue, labeler, queue.next_item(labeler), f"Refused, nothing saved: {exc}", True)

    def on_load(request: gr.Request) -> list[Any]:
        typed = None
        if request is not None and getattr(request, "query_params", None) is not None:
            typed = request.query_params.get("labeler")
        labeler = identity(request, typed)
        return _render(queue, labeler, queue.next_item(labeler))

    def on_name(typed: str, request: gr.Request) -> list[Any]:
        labeler = identity(request, typed)
        return _render(queue, labeler, queue.next_item(labeler), f"Labeling as {labeler}.")

    def handler(action: str, position: int | None) -> Callable[..., list[Any]]:
        def run(typed: str, shown: str, request: gr.Request) -> list[Any]:
            return act(action, position, typed, shown, request)

        return run

    with gr.Blocks(title=title) as demo:
        page = _layout(title, default_labeler, auth_enabled)
        inputs, outputs = [page.name, page.shown_lease], page.outputs
        for p, button in enumerate(page.buttons):
            button.click(handler("pick", p), inputs, outputs, api_visibility="private")
        page.skip.click(handler("skip", None), inputs, outputs, api_visibility="private")
        page.undo.click(handler("undo", None), inputs, outputs, api_visibility="private")
        page.name.submit(on_name, [page.name], outputs, api_visibility="private")
        demo.load(on_load, None, outputs, api_visibility="private")
    return demo


def serve(
    queue: LabelQueue | str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    password: str | None = None,
    users: dict[str, str] | str | os.PathLike | None = None,
    default_labeler: str = "local",
    title: str = "hf-prefs labeling",
    prevent_thread_lock: bool = False,
    **queue_kwargs: Any,
):
    """Launch the labeling page; returns the Gradio ``Blocks`` (blocks unless ``prevent_thread_lock``).

    Binds to ``host`` (loopback by default). Shared (a non-loopback ``host`` or ``share=True``), it
    refuses to start without a login: ``password`` (or ``$HF_PREFS_LABEL_PASSWORD``) or ``users``.
    """
    if not isinstance(queue, LabelQueue):
        queue = LabelQueue(queue, **queue_kwargs)
    elif queue_kwargs:
        raise TypeError(f"queue settings {sorted(queue_kwargs)} go to LabelQueue, not serve(), when a LabelQueue is given")
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or None
    auth = make_auth(password, users)
    if auth is None and (share or not is_loopback(host)):
        raise ValueError(
            f"refusing to share the labeling page (host={host!r}, share={share}) without a login: set --password, "
            f"${PASSWORD_ENV} or --users FILE (lines 'name:password'); labeler names come from the login"
        )
    demo = build_app(queue, default_labeler=default_labeler, auth_enabled=auth is not None, title=title)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        auth_message="Log in with your labeler name and the password you were given." if auth else None,
        prevent_thread_lock=prevent_thread_lock,
        theme=gr.themes.Default(),
        css=CSS,
        head=KEYBOARD_JS,
        footer_links=[],
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        quiet=False,
    )
    return demo
