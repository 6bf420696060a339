"""The benchmark's upstream: one Envoy that is never the bottleneck, plus a stamping SSE sender for streams.

* Non-streaming: an Envoy `direct_response` with a realistic OpenAI `chat.completion` body (usage
  included, so metering parses and prices it). A buffer filter reads the whole request first (otherwise
  Envoy answers before the body and then resets the connection).
* Streaming: requests carrying `x-bench-stream: 1`, or under `/stream/` (LiteLLM's api_base for its
  streaming model, since it does not forward client headers), go to the SSE sender: `--chunks` content
  chunks, one every `--interval-ms`, each carrying the sender's monotonic clock in its content
  (`t=<ns>`), then a usage chunk and `[DONE]`, framed as OpenAI frames `chat.completion.chunk`s.

    python -m bench.upstream sse --port P --chunks 50 --interval-ms 2      (the sender; prints "ready")
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

STREAM_HEADER = "x-bench-stream"

CHAT_RESPONSE = orjson.dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The sea keeps its own time, folding the light into long grey waves that never hurry.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 27,
            "completion_tokens": 19,
            "total_tokens": 46,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_bench00000",
    }
).decode()


def _router() -> dict[str, Any]:
    return {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}


def envoy_config(port: int, admin_port: int, sse_port: int) -> dict[str, Any]:
    sse_route = {"cluster": "sse", "timeout": "60s"}
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": STREAM_HEADER, "present_match": True}]}, "route": sse_route},
        {"match": {"prefix": "/stream/"}, "route": {**sse_route, "prefix_rewrite": "/"}},
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": CHAT_RESPONSE}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}},
                {"header": {"key": "x-request-id", "value": "req_bench"}},
            ],
        },
    ]
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": 8 * 1024 * 1024,
                },
            },
            {"name": "envoy.filters.http.router", "typed_config": _router()},
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "upstream",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "sse",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "sse",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": sse_port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


# -- the SSE sender

_CHUNK = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1767225600,'
    b'"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench00000",'
    b'"choices":[{"index":0,"delta":{"content":"t=%d"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
)
_TAIL = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1767225600,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":null}\n\n'
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1767225600,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":27,"completion_tokens":%d,'
    b'"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)


async def _send_stream(writer: asyncio.StreamWriter, chunks: int, interval_s: float) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"x-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for i in range(chunks):
        if i:
            await asyncio.sleep(interval_s)
        data = _CHUNK % time.perf_counter_ns()
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
    tail = _TAIL % (chunks, chunks + 27)
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
    await writer.drain()


StreamSender = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, send: StreamSender) -> None:
    """Every request on the connection (its body read and dropped) is answered by `send`."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").lower().split("\r\n")
            length = next((int(line.split(":", 1)[1]) for line in lines if line.startswith("content-length:")), None)
            if length is not None:
                await reader.readexactly(length)
            elif any(line.startswith("transfer-encoding:") and "chunked" in line for line in lines):
                while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                    await reader.readexactly(size + 2)
                await reader.readline()
            await send(writer)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        writer.close()


async def serve_streams(port: int, send: StreamSender) -> None:
    """An HTTP/1.1 keep-alive server on loopback answering every request with `send`; prints "ready" once bound."""
    server = await asyncio.start_server(lambda r, w: _serve_connection(r, w, send), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def sender(port: int, chunks: int, interval_ms: float) -> None:
    await serve_streams(port, lambda writer: _send_stream(writer, chunks, interval_ms / 1000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["sse"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    args = parser.parse_args()
    import uvloop

    uvloop.run(sender(args.port, args.chunks, args.interval_ms))


if __name__ == "__main__":
    main()
