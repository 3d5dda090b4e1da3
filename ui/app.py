"""The Gradio page: status line, disclaimer, urgent-care banner, chat, examples, settings, stop and clear.

Every handler is async and runs on Gradio's event loop, where the process's one `AsyncWingptClient`
(one gRPC channel) lives: a streamed answer costs a task, not a thread, so `concurrency` patients
can be answered at once. The stop and clear buttons cancel the answer's task, which cancels its
request on the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
from wingpt_client import AsyncWingptClient

from ui import text
from ui.chat import Exchange, Sampling, answer
from ui.settings import UiSettings
from ui.status import StatusMonitor
from wingpt.safety.disclaimer import DISCLAIMER
from wingpt.sampling import SamplingParams

CSS = """
#disclaimer { background: #fff7ed; border: 1px solid #fdba74; border-radius: 8px; padding: 6px 12px; }
#disclaimer p { color: #7c2d12; margin: 0; }
#triage-notice .urgent-notice { background: #b91c1c; color: #fff; border-radius: 8px; padding: 12px 16px;
  font-size: 1.15em; }
#triage-notice .urgent-notice p { color: #fff; margin: 4px 0 0; }
"""


class Backend:
    """The process's Triton client and status monitor, created on first use inside Gradio's event loop
    (a grpc.aio channel belongs to the loop that made it)."""

    def __init__(self, settings: UiSettings) -> None:
        self._settings = settings
        self._client: AsyncWingptClient | None = None
        self._monitor: StatusMonitor | None = None

    def client(self) -> AsyncWingptClient:
        if self._client is None:
            self._client = AsyncWingptClient.from_config(self._settings.client)
        return self._client

    def monitor(self) -> StatusMonitor:
        if self._monitor is None:
            self._monitor = StatusMonitor(self.client(), self._settings.status_interval_s)
        return self._monitor


def build_app(settings: UiSettings) -> gr.Blocks:
    backend = Backend(settings)
    defaults = SamplingParams()
    # session -> the answer allowed to update that session's page. Gradio sends the stop/clear cancellation
    # without waiting for it, so a cancelled answer could still write one more step over a cleared page; the
    # answer checks this before every step instead (one event loop: a check and its step are not interleaved).
    answering: dict[str | None, object] = {}

    async def chat(
        question: str, conversation: list[Exchange] | None, max_tokens: float, temperature: float, top_p: float,
        repetition_penalty: float, request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        conversation = conversation or []
        question = (question or "").strip()
        if not question:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        sampling = Sampling(int(max_tokens), float(temperature), float(top_p), float(repetition_penalty))
        session, token = request.session_hash, object()
        answering[session] = token
        first = True
        try:
            async with contextlib.aclosing(
                answer(backend.client(), backend.monitor(), conversation, question, sampling)
            ) as pages:
                async for page in pages:
                    if answering.get(session) is not token:
                        return  # cleared meanwhile; closing `pages` cancels the request
                    # The state goes first, so Gradio stores it before anything else of this step.
                    # The input is cleared once; later steps leave it alone, so the next question can be typed.
                    yield page.conversation, ("" if first else gr.skip()), page.messages, _banner(page.banner)
                    first = False
        finally:
            if answering.get(session) is token:
                del answering[session]

    async def clear(request: gr.Request) -> tuple[Any, ...]:
        answering.pop(request.session_hash, None)
        return [], _banner(""), []

    async def status() -> tuple[str, str]:
        current = await backend.monitor().current()
        return current.line(), _disclaimer(current.disclaimer)

    with gr.Blocks(title=text.TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {text.TITLE}\n{text.SUBTITLE}")
        status_line = gr.Markdown(text.STATUS_CHECKING, elem_id="server-status")
        disclaimer = gr.Markdown(_disclaimer(""), elem_id="disclaimer")
        banner = gr.HTML("", elem_id="triage-notice", visible=False)
        conversation = gr.State([])
        # Plain text: what the model and the patient wrote is shown as written, never interpreted as Markdown/HTML.
        chatbot = gr.Chatbot(label=text.CHAT_LABEL, elem_id="chat", height=480, buttons=["copy"],
                             render_markdown=False)
        with gr.Row():
            question = gr.Textbox(label=text.INPUT_LABEL, placeholder=text.INPUT_PLACEHOLDER, elem_id="question",
                                  scale=5, lines=1, max_lines=6, autofocus=True)
            send = gr.Button(text.SEND, variant="primary", elem_id="send", scale=1)
        with gr.Row():
            stop = gr.Button(text.STOP, variant="stop", elem_id="stop")
            clear_button = gr.Button(text.CLEAR, elem_id="clear")
        gr.Examples(examples=[[q] for q in text.EXAMPLES], inputs=[question], label=text.EXAMPLES_LABEL)
        with gr.Accordion(text.SETTINGS, open=False, elem_id="settings"):
            max_tokens = gr.Slider(1, settings.max_tokens_limit, value=settings.max_tokens_default, step=1,
                                   label=text.MAX_TOKENS, elem_id="max-tokens")
            temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label=text.TEMPERATURE,
                                    info=text.TEMPERATURE_INFO, elem_id="temperature")
            top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label=text.TOP_P, info=text.TOP_P_INFO,
                              elem_id="top-p")
            repetition_penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.01,
                                           label=text.REPETITION_PENALTY, info=text.REPETITION_PENALTY_INFO,
                                           elem_id="repetition-penalty")

        asked = gr.on(
            [question.submit, send.click], chat,
            inputs=[question, conversation, max_tokens, temperature, top_p, repetition_penalty],
            outputs=[conversation, question, chatbot, banner],
            api_name="chat", show_progress="minimal", show_progress_on=[chatbot],
            concurrency_limit=settings.concurrency,
        )
        stop.click(None, cancels=[asked], api_visibility="private")
        # The chat widget's own trash icon clears only what it shows: forget the conversation with it.
        for trigger in (clear_button.click, chatbot.clear):
            trigger(clear, outputs=[chatbot, banner, conversation], cancels=[asked], api_visibility="private",
                    concurrency_limit=None)
        # The status line: at page load and on a timer; both read the monitor's cache (no RPC per page).
        for trigger in (app.load, gr.Timer(settings.status_interval_s).tick):
            trigger(status, outputs=[status_line, disclaimer], api_visibility="private", show_progress="hidden",
                    concurrency_limit=None)
    app.queue(max_size=settings.queue_size)
    return app


def _disclaimer(from_server: str) -> str:
    """The disclaimer the server is configured to show, else the model card's: shown even while Triton is down."""
    return f"**{text.DISCLAIMER_TITLE}**：{from_server or DISCLAIMER}"


def _banner(html: str) -> gr.HTML:
    return gr.HTML(html, visible=bool(html))


def launch(app: gr.Blocks, settings: UiSettings) -> None:
    """Serve until the process is stopped.

    `run_history=False`: Gradio 6 otherwise keeps every call's inputs and outputs in the browser (and offers
    to upload them to a Hugging Face bucket); on a shared triage-desk computer the next patient would find
    the previous one's conversation.
    """
    app.launch(server_name=settings.host, server_port=settings.port, css=CSS, ssr_mode=False, show_error=False,
               run_history=False, footer_links=["api", "settings"])
