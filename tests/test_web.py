"""The web UI in a real browser: Debian's chromium driven by Playwright, against a real
uvicorn server on 127.0.0.1 over the sample notes with the real model.

Without chromium or playwright (`bash scripts/install-system.sh`, `pip install -e
'.[test]'`) these tests are skipped, except when the `CI` environment variable is set:
CI installs both, so there their absence fails.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from sourcebook import KnowledgeBase, Settings
from sourcebook.surfaces.server import create_app
from test_server import LiveServer, ScriptedLLM

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
except ImportError:  # the `browser` fixture skips (or, under CI, fails)
    sync_playwright = None

pytestmark = pytest.mark.browser

# where Debian's package puts the browser binary (/usr/bin/chromium is a wrapper script)
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")
TIMEOUT_MS = 60_000  # an answer takes well under a second, but the machine may be loaded

CHINESE = "Adam 的默认 β2 是多少？"
ENGLISH = "What is the default prefetch_factor of a PyTorch DataLoader?"
# distinct questions (repeating one would time the query-vector cache)
TIMED = [
    "LoRA 的 rank r 一般取多少？",
    "GPT-2 的词表有多大？",
    "GradScaler 的默认 init_scale 是多少？",
    "What does ONNX Runtime's execution provider do?",
    "Why do Transformers use LayerNorm instead of BatchNorm?",
]

NEW_NOTE = """# 酸面包笔记 Sourdough notes

My sourdough levain uses a 1:5:5 ratio of starter, flour and water.

## 烘焙 Baking

面团在 250 度的铸铁锅里烤 20 分钟，然后开盖再烤 15 分钟。
"""

HOSTILE_NOTE = """# Notes on <script> tags

<script>window.injected = true</script>

<img src="x" onerror="window.injected = true">

Plain text after the markup.
"""


def chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    missing = [
        what
        for what, absent in (
            ("playwright (pip install -e '.[test]')", sync_playwright is None),
            ("chromium (bash scripts/install-system.sh)", executable is None),
        )
        if absent
    ]
    if missing:
        message = f"the web UI tests need {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {message}", pytrace=False)
        pytest.skip(message)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


def unexpected(message: ConsoleMessage) -> bool:
    """A console error, other than the browser's note of an HTTP error status (which the
    tests check through what the page shows)."""
    return message.type == "error" and not message.text.startswith("Failed to load resource")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; any script error or failed check in the browser fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console", lambda message: errors.append(message.text) if unexpected(message) else None
    )
    yield opened
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def live(notes_kb: KnowledgeBase) -> Iterator[str]:
    """A server over the session knowledge base, for the tests that only read."""
    with LiveServer(create_app(notes_kb)) as server:
        yield server.url


@pytest.fixture
def writable(kb_copy: tuple[KnowledgeBase, Path]) -> Iterator[str]:
    """A server over a private, writable copy, for the tests that upload."""
    with LiveServer(create_app(kb_copy[0])) as server:
        yield server.url


def ask(page: Page, question: str) -> None:
    page.fill("#question", question)
    page.click("#ask-form button[type=submit]")


def highlighted_lines(page: Page, scope: str) -> list[int]:
    return [
        int(n)
        for n in page.locator(f"{scope} .line.hl").evaluate_all(
            "rows => rows.map(row => row.dataset.line)"
        )
    ]


# --- chat ------------------------------------------------------------------------------


def test_chinese_question_cites_and_opens_the_quoted_lines(page: Page, live: str) -> None:
    page.goto(live)
    expect(page.locator("#mode")).to_be_hidden()  # no language model configured
    ask(page, CHINESE)
    answer = page.locator(".turn .answer").last
    expect(answer).to_have_attribute("data-found", "true")
    expect(answer.locator(".answer-text")).to_contain_text("β2=0.999")
    expect(answer.locator(".sources li").first).to_contain_text("notes/training/optimizers.md:")
    expect(answer.locator(".sources li").first).to_contain_text("› Adam")

    # the same answer from the JSON API says which lines the citation quotes
    expected = httpx.post(f"{live}/api/ask", json={"question": CHINESE}, timeout=60).json()
    citation = expected["citations"][0]
    quoted = {n for first, last in citation["quote_lines"] for n in range(first, last + 1)}

    answer.locator(".answer-text .cite").first.click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".line.hl", has_text="β2=0.999")).to_be_in_viewport()
    assert set(highlighted_lines(page, "#viewer")) == quoted
    # lines around the quote are shown too, not highlighted
    assert page.locator("#viewer .line").count() > len(quoted)

    # the whole document, with the same lines highlighted
    page.click("#viewer-open")
    expect(page).to_have_url(
        re.compile(rf"/documents/{citation['hit']['doc_id']}\?start=.*&lines=")
    )
    expect(page.locator("#document-lines .line.hl", has_text="β2=0.999")).to_be_in_viewport()
    assert set(highlighted_lines(page, "#document-lines")) == quoted
    expect(page.locator("#document-title")).to_have_text("优化器与学习率调度")


def test_english_question_and_the_key_hook(page: Page, live: str) -> None:
    page.goto(live)
    # a key saved in the browser goes with every API call (for when the server checks it)
    page.evaluate("localStorage.setItem('sourcebook.apiKey', 'test-key')")
    with page.expect_request("**/api/ask/stream") as request:
        ask(page, ENGLISH)
    assert request.value.headers["authorization"] == "Bearer test-key"
    answer = page.locator(".turn .answer").last
    expect(answer.locator(".answer-text")).to_contain_text("default is 2")
    expect(answer.locator(".answer-text .cite")).not_to_have_count(0)
    expect(answer.locator("h3")).to_have_text("Sources")
    expect(answer.locator(".sources li").first).to_contain_text("dataloader-tips.rst:")


def test_off_topic_questions_say_not_found_in_their_language(page: Page, live: str) -> None:
    page.goto(live)
    ask(page, "红烧肉怎么做才好吃？")
    chinese = page.locator(".turn .answer").nth(0)
    expect(chinese).to_have_class(re.compile(r"\bnot-found\b"))
    expect(chinese.locator(".answer-text")).to_contain_text("知识库中没有找到相关内容")
    expect(chinese.locator(".answer-text .cite")).to_have_count(0)
    ask(page, "Who won the 1998 FIFA World Cup final?")
    english = page.locator(".turn .answer").nth(1)
    expect(english).to_have_class(re.compile(r"\bnot-found\b"))
    expect(english.locator(".answer-text")).to_contain_text("Not found in the knowledge base")


def test_first_answer_render_time(
    page: Page, live: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Submit → the answer's first text on the page, timed in the browser, and split into
    the time until the server's first byte and what the browser adds after it."""
    page.goto(live)
    page.evaluate("""() => {
        window.timings = [];
        let submitted = 0;
        // capture phase: runs before the page's own submit handler
        document.addEventListener("submit", () => { submitted = performance.now(); }, true);
        new MutationObserver(() => {
            const texts = document.querySelectorAll(".turn .answer-text");
            const last = texts[texts.length - 1];
            if (submitted && last && last.textContent) {
                window.timings.push({submitted, rendered: performance.now()});
                submitted = 0;
            }
        }).observe(document.getElementById("turns"),
                   {childList: true, subtree: true, characterData: true});
    }""")
    for i, question in enumerate(TIMED):
        ask(page, question)
        expect(page.locator(".turn .answer-text").nth(i)).not_to_be_empty()
    streams = "performance.getEntriesByType('resource').filter(e => e.name.endsWith('/ask/stream'))"
    page.wait_for_function(f"{streams}.length === {len(TIMED)}")  # each listed once complete
    runs = page.evaluate(f"""() => {{
        const streams = {streams};
        return window.timings.map((t, i) => ({{
            total: t.rendered - t.submitted,
            browser: t.rendered - streams[i].responseStart,
        }}));
    }}""")
    assert len(runs) == len(TIMED)
    total = [run["total"] for run in runs]
    browser = [run["browser"] for run in runs]
    with capsys.disabled():
        print(
            f"\nweb UI, submit → first answer render: median {statistics.median(total):.0f} ms "
            f"(runs {', '.join(f'{t:.0f}' for t in total)}); of which after the server's "
            f"first byte: median {statistics.median(browser):.1f} ms"
        )


def test_a_server_with_users_asks_for_the_key_once(
    page: Page, kb_copy: tuple[KnowledgeBase, Path], writable: str
) -> None:
    access = kb_copy[0].access
    access.add_user("wei", admin=True)
    _, key = access.create_key("wei")
    page.goto(writable)  # the page is public; the API calls it makes need the key
    ask(page, ENGLISH)
    refused = page.locator(".turn .answer").last
    expect(refused).to_have_class(re.compile(r"\bfailed\b"))
    page.fill(".key-form input", key)
    page.click(".key-form button")
    page.wait_for_load_state()
    ask(page, ENGLISH)
    expect(page.locator(".turn .answer-text").last).to_contain_text("default is 2")
    assert page.evaluate("localStorage.getItem('sourcebook.apiKey')") == key


# --- generate mode (a scripted model; retrieval and verification are the real ones) ------


def test_generate_mode_shows_the_draft_then_the_verified_answer(
    page: Page, kb_copy: tuple[KnowledgeBase, Path]
) -> None:
    path = kb_copy[0].path
    settings = Settings(kb=path, answer_cache=False)
    slow_model = ScriptedLLM()
    slow_model.delay = 0.15  # slow enough to watch the draft being written
    with (
        KnowledgeBase(path, settings, llm=slow_model) as kb,
        LiveServer(create_app(kb)) as server,
    ):
        page.goto(server.url)
        expect(page.locator("#mode")).to_be_visible()  # the server has a model
        page.check("input[name=mode][value=generate]")
        ask(page, ENGLISH)
        answer = page.locator(".turn .answer").last
        # the draft as the model writes it, before it is checked
        expect(answer).to_have_class(re.compile(r"\bdrafting\b"))
        expect(answer.locator(".answer-text")).to_contain_text("Each worker")
        # then the verified answer: the unsupported sentence is gone, with a notice
        expect(answer).to_have_attribute("data-found", "true")
        expect(answer.locator(".answer-text")).to_contain_text("two by default")
        expect(answer.locator(".answer-text")).not_to_contain_text("Eiffel")
        expect(answer.locator(".notice")).not_to_be_empty()
        expect(answer.locator(".answer-text .cite")).to_have_count(1)


# --- documents, upload, search ---------------------------------------------------------


def test_upload_then_search_then_view(page: Page, writable: str) -> None:
    page.goto(f"{writable}/documents")
    expect(page.locator("#documents tbody tr")).to_have_count(20)  # the sample notes
    expect(page.locator("#documents tbody")).to_contain_text("notes/training/optimizers.md")
    page.set_input_files(
        "#files",
        [
            {"name": "sourdough.md", "mimeType": "text/markdown", "buffer": NEW_NOTE.encode()},
            {"name": "empty.md", "mimeType": "text/markdown", "buffer": b""},
        ],
    )
    page.click("#upload-form button[type=submit]")
    results = page.locator("#upload-results li")
    expect(results).to_have_count(2)
    expect(results.nth(0)).to_have_attribute("data-status", "indexed")
    expect(results.nth(0)).to_contain_text("sourdough.md")
    expect(results.nth(1)).to_have_attribute("data-status", "failed")
    expect(results.nth(1)).to_contain_text("empty")  # the reason
    row = page.locator("#documents tbody tr", has_text="uploads/sourdough.md")
    expect(row).to_contain_text("indexed")
    expect(page.locator("#documents tbody tr")).to_have_count(21)

    page.click("nav >> text=Search")
    page.fill("#q", "铸铁锅 烤多久")
    page.click("#search-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/search\?q="))
    first = page.locator("#results .result").first
    expect(first).to_contain_text("uploads/sourdough.md:")
    expect(first).to_contain_text("烘焙 Baking")
    expect(first.locator(".ranks")).to_contain_text(re.compile(r"(bm25|dense) #1"))
    first.locator("a.title").click()
    expect(page.locator("#document-title")).to_have_text("酸面包笔记 Sourdough notes")
    expect(page.locator("#document-lines .line.hl", has_text="铸铁锅")).to_have_count(1)

    # English words find it too
    page.goto(f"{writable}/search?q=levain%20ratio")
    expect(page.locator("#q")).to_have_value("levain ratio")
    expect(page.locator("#results .result").first).to_contain_text("uploads/sourdough.md:")


def test_document_view_shows_markup_as_text(page: Page, writable: str) -> None:
    files = [("files", ("hostile.md", HOSTILE_NOTE.encode()))]
    report = httpx.post(f"{writable}/api/documents", files=files, timeout=120).json()
    doc_id = report["files"][0]["document"]["id"]
    page.goto(f"{writable}/documents/{doc_id}?start=3&end=5")
    expect(page.locator("#document-title")).to_have_text("Notes on <script> tags")
    highlighted = page.locator("#document-lines .line.hl .lt")
    expect(highlighted).to_have_text(
        [
            "<script>window.injected = true</script>",
            "",
            '<img src="x" onerror="window.injected = true">',
        ]
    )
    assert page.locator("#document-lines script, #document-lines img").count() == 0
    assert page.evaluate("window.injected") is None
    assert highlighted_lines(page, "#document-lines") == [3, 4, 5]


def test_a_wiki_link_opens_the_note_it_names(page: Page, writable: str) -> None:
    files = [
        (
            "files",
            ("wiki-index.md", "# 目录\n见 [[wiki-target|目标笔记]] 和 [[没写的笔记]]。\n".encode()),
        ),
        ("files", ("wiki-target.md", "# 目标 Target\n这里是目标笔记。\n".encode())),
    ]
    report = httpx.post(f"{writable}/api/documents", files=files, timeout=120).json()
    ids = {f["name"]: f["document"]["id"] for f in report["files"]}
    page.goto(f"{writable}/documents/{ids['wiki-index.md']}")
    missing = page.locator("#document-lines .wikilink.missing")
    expect(missing).to_have_text("[[没写的笔记]]")
    page.locator("#document-lines a.wikilink").click()
    expect(page).to_have_url(re.compile(rf"/documents/{ids['wiki-target.md']}$"))
    expect(page.locator("#document-title")).to_have_text("目标 Target")


def test_a_pdf_citation_opens_its_page_with_the_quote_marked(page: Page, live: str) -> None:
    question = "What auxiliary loss coefficient does the Switch Transformer use for load balancing?"
    page.goto(live)
    ask(page, question)
    answer = page.locator(".turn .answer").last
    expect(answer).to_have_attribute("data-found", "true")
    expected = httpx.post(f"{live}/api/ask", json={"question": question}, timeout=60).json()
    citation = next(c for c in expected["citations"] if c["hit"]["path"].endswith(".pdf"))
    doc_id = citation["hit"]["doc_id"]
    first, last = citation["quote_lines"][0]
    regions = httpx.get(
        f"{live}/api/documents/{doc_id}/regions", params={"start": first, "end": last}
    ).json()
    assert regions and regions[0]["page"] == citation["hit"]["page_start"] == 1

    answer.locator(f".answer-text .cite[data-n='{citation['n']}']").first.click()
    shown = page.locator("#viewer-page")
    expect(shown).to_be_visible()
    expect(shown.locator(".page-label")).to_contain_text("page 1")
    image = shown.locator("img")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth") == 1000
    mark = shown.locator(".page-region").first
    expect(mark).to_be_visible()
    # the mark sits where the API says the quoted lines are, in fractions of the page
    frame = shown.locator(".page-frame").bounding_box()
    box = mark.bounding_box()
    assert frame is not None and box is not None
    x0, y0, _, _ = regions[0]["box"]
    assert abs((box["x"] - frame["x"]) / frame["width"] - x0) < 0.01
    assert abs((box["y"] - frame["y"]) / frame["height"] - y0) < 0.01

    page.click("#viewer-open")
    expect(page).to_have_url(re.compile(rf"/documents/{doc_id}\?.*&page=1"))
    expect(page.locator("#document-page .page-region").first).to_be_visible()


def test_the_pages_say_what_waits_for_vectors_and_follow_a_watched_folder(
    page: Page, tmp_path: Path
) -> None:
    """`serve --watch`: while chunks wait for their vectors the documents and search pages
    say so (here another process holds the write lock, so the server's embedder cannot
    store them); a file deleted from a watched folder leaves the documents page."""
    notes, kb_path = tmp_path / "notes", tmp_path / "kb"
    notes.mkdir()
    (notes / "kv.md").write_text("# KV cache\n\nKV cache 缓存键和值，省去重复计算。\n")
    (notes / "beam.md").write_text("# Beam search\n\nBeam search keeps the k best prefixes.\n")
    settings = Settings(kb=kb_path, embedder="use-multilingual")
    with KnowledgeBase.create(kb_path, settings) as kb, ExitStack() as writing:
        kb.add([notes], wait=False)
        blocker = KnowledgeBase(kb_path, Settings(kb=kb_path))
        # another process writing, from before the server starts (its embedder would
        # otherwise store two short chunks at once): nothing can be stored
        writing.enter_context(blocker.store.writing())
        with LiveServer(create_app(kb, watch=True)) as server:
            page.goto(f"{server.url}/documents")
            status = page.locator("#embedding-status")
            expect(status).to_be_visible()
            expect(status).to_contain_text("embedding 0 of 2 chunks")
            page.goto(f"{server.url}/search?q=KV%20cache")
            expect(page.locator("#embedding-status")).to_contain_text("2 waiting")
            expect(page.locator("#results .result").first).to_contain_text("kv.md")
            writing.close()  # the lock is free: the embedder stores the vectors
            expect(page.locator("#embedding-status")).to_be_hidden()
            (notes / "beam.md").unlink()
            for _ in range(100):  # the list is read when the page loads
                page.goto(f"{server.url}/documents")
                expect(page.locator("#documents-summary")).to_contain_text("documents")
                if page.locator("#documents tbody tr").count() == 1:
                    break
                page.wait_for_timeout(200)
            expect(page.locator("#documents tbody tr")).to_have_count(1)
            expect(page.locator("#documents tbody")).to_contain_text("kv.md")
        blocker.close()
