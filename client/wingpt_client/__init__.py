"""WiNGPT2 chat served by Triton Inference Server, for hospital backend services.

Sync and asyncio twins with the same arguments and the same closed set of errors:

    from wingpt_client import WingptClient
    client = WingptClient("triton:8001")
    answer = client.chat([{"role": "user", "content": "宝宝15个月37.3度算发烧吗？"}], max_tokens=256)
    for delta in client.stream_chat("孩子咳嗽三天了怎么办？"):
        ...
"""

from wingpt_client._protocol import Health, Messages, ModelInfo, SamplingOptions, Triage
from wingpt_client.aio import AsyncChatStream, AsyncWingptClient
from wingpt_client.client import ChatStream, WingptClient
from wingpt_client.config import ClientConfig
from wingpt_client.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
    WingptClientError,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncChatStream",
    "AsyncWingptClient",
    "CancelledError",
    "ChatStream",
    "ClientConfig",
    "DeadlineExceededError",
    "Health",
    "InvalidRequestError",
    "Messages",
    "ModelInfo",
    "OverloadedError",
    "SamplingOptions",
    "Triage",
    "UnavailableError",
    "WingptClient",
    "WingptClientError",
]
