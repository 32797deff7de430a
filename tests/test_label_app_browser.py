"""End to end: the labeling page (Gradio) in headless Debian Chromium driven by Playwright.

Needs the ``label`` extra (gradio), ``pip install playwright`` (the Python package only: no browser
download, the system Chromium is used) and ``apt-get install -y chromium``. Missing pieces make the
tests FAIL with what to install; deselect them with ``-m "not browser"``.
``HF_PREFS_LABEL_SCREENSHOT=docs/label_app.png`` also saves the page screenshot there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import hf_prefs
from hf_prefs.labels.event_log import LOG_NAME
from hf_prefs.labels.queue import LabelQueue

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("HF_PREFS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Book-like queries (the first two lines are Austen's, public domain) and K = 4 continuations.
ITEMS = [
    ("It is a truth universally acknowledged, that a single man in possession of a good fortune,", [
        "must be in want of a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood,",
        "will spend it all on horses before the winter is out, or so Mrs. Bennet feared.",
        "is seldom as happy as his neighbours suppose, for money brings its own cares.",
        "walked into the room and asked for a glass of water and a chair by the window.",
    ]),
    ("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition,", [
        "seemed to unite some of the best blessings of existence; and had lived nearly twenty-one years in the world with very little to distress or vex her.",
        "decided that afternoon to learn the pianoforte properly, though she had decided so before.",
        "was not at all pleased to find Mr. Elton already seated in the drawing room.",
        "went for a long walk and came back tired.",
    ]),
    ("Mr. Darcy looked up from his letter and said,", [
        "\"I have been meaning to speak with you about your sister, Miss Bennet.\"",
        "nothing at all, which was exactly what Elizabeth had expected of him.",
        "\"The weather in Hertfordshire is tolerable, I suppose, for those who like rain.\"",
        "that he would dine at Netherfield and return to town by the end of the week.",
    ]),
    ("The garden at Pemberley was larger than she had imagined, and", [
        "every path seemed to lead back to the house, as if the grounds themselves wished her to stay.",
        "she was soon lost among the hedges, which delighted the gardener.",
        "the roses were not yet in bloom.",
        "Mrs. Reynolds was eager to show her the new fountain.",
    ]),
    ("Anne had not expected to see Captain Wentworth again so soon, yet", [
        "there he stood at the door of the concert room, as composed as if eight years had been eight days.",
        "the rain had kept everyone indoors at Uppercross that week.",
        "she found she could not remember the colour of his coat.",
        "Lady Russell had warned her that Bath was full of surprises.",
    ]),
]


def _require_tools():
    missing = []
    try:
        import gradio  # noqa: F401
    except ImportError:
        missing.append("pip install 'hf-prefs[label]' (gradio)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("pip install playwright (the Python package; no browser download is needed)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"apt-get install -y chromium (no executable at {CHROMIUM}; or set HF_PREFS_CHROMIUM)")
    if missing:
        pytest.fail("the labeling-app browser tests need: " + "; ".join(missing), pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(qdir: Path, log_path: Path, *args: str, env: dict | None = None):
    """``hf-prefs label serve`` (via ``python -m hf_prefs.label_app.cli``) on a free loopback port."""
    port = _free_port()
    cmd = [sys.executable, "-m", "hf_prefs.label_app.cli", "label", "serve", "--queue", str(qdir), "--port", str(port), *args]
    root = str(Path(hf_prefs.__file__).resolve().parents[1])  # the server runs the same hf_prefs as this test
    pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": pythonpath, **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer on {url} within 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def chromium_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


def shown(page) -> tuple[str, str, list[str]]:
    """(lease id, item id, sample texts in shown order) of what the page displays now."""
    query = page.locator(".hp-query")
    return query.get_attribute("data-lease"), query.get_attribute("data-item"), page.locator(".hp-card .hp-text").all_inner_texts()


def act_and_wait(page, action, old_lease: str, expect_status: str) -> None:
    """Do ``action`` and wait until the page shows a new lease and the confirmation text."""
    action()
    page.wait_for_function(
        """([old, text]) => {
            const q = document.querySelector('.hp-query');
            const s = document.querySelector('#status');
            return (!q || q.dataset.lease !== old) && s && s.innerText.includes(text);
        }""",
        arg=[old_lease, expect_status],
    )


def item_samples(item_id: str) -> list[str]:
    return ITEMS[int(item_id.split("-")[1])][1]


def test_label_by_click_and_keyboard_then_stored_labels(tmp_path):
    """Click and keys (1..K, S, U) in a real browser; the stored labels map shown positions back."""
    _require_tools()
    start = time.monotonic()
    qdir = tmp_path / "queue"
    queue = LabelQueue(qdir)
    queue.put_round(0, ITEMS)
    queue.put_round(1, ITEMS[:1])  # item 1-00000, shown last
    expected: dict[str, int] = {}
    with running_server(qdir, tmp_path / "server.log", "--labeler", "nobody", "--repeat-fraction", "0", "--seed", "7") as url, chromium_page() as page:
        page.goto(url + "?labeler=alice")
        page.wait_for_selector(".hp-query")
        assert "Labeler: alice" in page.inner_text("#progress")

        # 1) click the card holding stored sample 2
        lease, item_a, texts = shown(page)
        assert item_a == "0-00000" and sorted(texts) == sorted(item_samples(item_a))
        position = texts.index(item_samples(item_a)[2])
        act_and_wait(page, lambda: page.click(f"#pick-{position + 1}"), lease, f"Saved: item {item_a}, you picked #{position + 1}")
        expected[item_a] = 2

        # 2) keyboard: "3" picks whatever is shown third
        lease, item_b, texts_b = shown(page)
        act_and_wait(page, lambda: page.keyboard.press("3"), lease, f"Saved: item {item_b}, you picked #3")

        # 3) "s" skips, 4) "u" undoes the answer on item_b: it comes back in the same order
        lease, item_c, _ = shown(page)
        act_and_wait(page, lambda: page.keyboard.press("s"), lease, f"Skipped item {item_c}.")
        lease, item_d, _ = shown(page)
        act_and_wait(page, lambda: page.keyboard.press("u"), lease, f"Undid your last answer (item {item_b})")
        lease, again, texts_again = shown(page)
        assert (again, texts_again) == (item_b, texts_b)
        act_and_wait(page, lambda: page.keyboard.press("1"), lease, f"Saved: item {item_b}, you picked #1")
        expected[item_b] = item_samples(item_b).index(texts_b[0])

        # 5) the item that was showing before the undo comes back; "4" picks it
        lease, item, texts_d = shown(page)
        assert item == item_d
        act_and_wait(page, lambda: page.keyboard.press("4"), lease, f"Saved: item {item_d}, you picked #4")
        expected[item_d] = item_samples(item_d).index(texts_d[3])

        progress = page.inner_text("#progress")
        assert "Labeled: 3" in progress and "Skipped: 1" in progress and "Queue: 3/6 items done" in progress
        # a stale page is refused: another tab of alice skipped the item shown here, so a key press
        # on this page must not label what is now alice's current item
        lease, item_e, _ = shown(page)
        LabelQueue(qdir).skip("alice", item_e)
        act_and_wait(page, lambda: page.keyboard.press("2"), lease, "The page was out of date")
        assert shown(page)[1] == "1-00000"
        # on a local page the labeler can change the name they label under
        page.fill("#labeler-name input, #labeler-name textarea", "carol")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('Labeling as carol')")
        # carol gets the oldest item that still needs a label: the one alice skipped
        assert "Labeler: carol" in page.inner_text("#progress") and shown(page)[1] == item_c

    ds = LabelQueue(qdir).labels()
    assert {r["item_id"]: r["best"] for r in ds} == expected
    assert set(ds["labeler"]) == {"alice"} and set(ds["source"]) == {"app"}
    for row in ds:  # the shown order is stored and maps positions to stored indices
        assert sorted(row["shown_order"]) == list(range(4))
    events = [line for line in (qdir / LOG_NAME).read_text().splitlines()]
    assert sum('"type":"undo"' in e for e in events) == 1 and sum('"type":"skip"' in e and item_c in e for e in events) == 1
    print(f"click+keyboard flow: {time.monotonic() - start:.1f} s")


def test_login_records_the_labeler_and_screenshot(tmp_path):
    """With a password the page needs a login; the login name (not ?labeler=) is the stored labeler.
    Also writes the screenshot (and checks it is a real, non-blank PNG)."""
    _require_tools()
    qdir = tmp_path / "queue"
    queue = LabelQueue(qdir, labels_per_item=2)
    queue.put_round(0, ITEMS[:3])
    # another team already labeled item 0 (collected elsewhere, plugged in from a file's rows)
    queue.add_labels([{"item_id": "0-00000", "query": ITEMS[0][0], "samples": ITEMS[0][1], "best": 0, "labeler": "expert"}])
    shot = tmp_path / "label_app.png"
    with running_server(qdir, tmp_path / "server.log", "--seed", "1", env={"HF_PREFS_LABEL_PASSWORD": "s3cret"}) as url, chromium_page() as page:
        page.goto(url + "?labeler=mallory")
        page.wait_for_selector("input[type=password]")
        assert page.locator(".hp-query").count() == 0  # nothing is shown before login
        page.fill("input[type=text]", "bob")
        page.fill("input[type=password]", "wrong")
        page.keyboard.press("Enter")
        page.wait_for_selector("text=Incorrect Credentials")
        page.fill("input[type=text]", "bob")
        page.fill("input[type=password]", "s3cret")
        page.keyboard.press("Enter")
        page.wait_for_selector(".hp-query")
        assert "Labeler: bob" in page.inner_text("#progress")
        lease, item, texts = shown(page)
        assert item == "0-00000"
        act_and_wait(page, lambda: page.keyboard.press("2"), lease, f"Saved: item {item}, you picked #2")
        best = item_samples(item).index(texts[1])
        progress = page.inner_text("#progress")
        assert f"Agreement with others: {int(best == 0)}/1" in progress
        page.wait_for_selector(".hp-query")
        page.screenshot(path=str(shot), full_page=True)
    ds = LabelQueue(qdir).labels()
    assert sorted(zip(ds["labeler"], ds["best"])) == sorted([("expert", 0), ("bob", best)])
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    target = os.environ.get("HF_PREFS_LABEL_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_shared_page_refuses_to_start_without_login(tmp_path):
    _require_tools()
    from hf_prefs.label_app.app import is_loopback, make_auth, serve

    for host in ("0.0.0.0", "192.168.1.5"):
        with pytest.raises(ValueError, match="refusing to share the labeling page"):
            serve(tmp_path / "q", host=host)
    with pytest.raises(ValueError, match="refusing to share"):
        serve(tmp_path / "q", share=True)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and not is_loopback("0.0.0.0")
    users = tmp_path / "users.txt"
    users.write_text("# team\nann:pw-a\nben:pw-b\n")
    auth = make_auth(users=users)
    assert auth("ann", "pw-a") and not auth("ann", "pw-b") and not auth("eve", "pw-a")
    shared = make_auth(password="pw")
    assert shared("anyone", "pw") and not shared("anyone", "nope") and not shared("bad name!", "pw")
    assert make_auth() is None
