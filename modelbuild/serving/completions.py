"""`/v1/completions` (OpenAI's legacy text completion route), which LitServe's OpenAISpec does not serve.

It reuses OpenAISpec's plumbing (the worker queues, streaming of `predict`'s pieces) and changes only the
request and response shapes: `prompt` in, `choices[].text` out, `text_completion` objects.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque

from fastapi import BackgroundTasks, HTTPException
from fastapi.responses import StreamingResponse
from litserve.specs.openai import OpenAISpec
from litserve.utils import LitAPIStatus, ResponseBufferItem
from pydantic import BaseModel


class CompletionRequest(BaseModel):
    model: str = "model"
    prompt: str
    max_tokens: int | None = 16
    temperature: float | None = None
    seed: int | None = None
    stream: bool = False


def _chunk(request: CompletionRequest, cid: str, text: str, finish: str | None) -> dict:
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": request.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


class CompletionSpec(OpenAISpec):
    def __init__(self):
        super().__init__()
        self.api_path = "/v1/completions"

    def pre_setup(self, lit_api):
        self.add_endpoint(self.api_path, self.completion, ["POST"])

    def populate_context(self, context, request):
        context.update(request.model_dump(exclude={"prompt"}))

    async def completion(self, request: CompletionRequest, background_tasks: BackgroundTasks):
        uid, queue, event = uuid.uuid4(), deque(), asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(response_queue=queue, event=event)
        self.request_queue.put((self.response_queue_id, uid, time.monotonic(), request))
        pieces = self.data_streamer(queue, event, send_status=True)
        cid = f"cmpl-{uuid.uuid4().hex[:24]}"
        if request.stream:
            return StreamingResponse(self._stream(request, cid, pieces), media_type="text/event-stream",
                                     background=background_tasks)
        text = "".join([t async for t in self._texts(pieces)])
        return {**_chunk(request, cid, text, "stop"), "usage": None}

    async def _texts(self, pieces):
        import json

        async for response, status in pieces:
            if status == LitAPIStatus.ERROR:
                raise response if isinstance(response, HTTPException) else HTTPException(500)
            yield json.loads(response).get("content") or ""

    async def _stream(self, request, cid, pieces):
        import json

        try:
            async for text in self._texts(pieces):
                yield f"data: {json.dumps(_chunk(request, cid, text, None))}\n\n"
            yield f"data: {json.dumps(_chunk(request, cid, '', 'stop'))}\n\n"
            yield "data: [DONE]\n\n"
        except HTTPException as e:
            yield f"data: {json.dumps({'error': {'message': str(e.detail), 'type': 'internal'}})}\n\n"
