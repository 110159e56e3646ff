"""`modelbuild serve` of a text classifier (dynamic batching) and of a causal LM (OpenAI-compatible routes,
checked with the official `openai` client), each a tiny model saved as a plain folder."""

from __future__ import annotations

import concurrent.futures
import re

import httpx
import pytest
from served import Served
from tiny import save_causal_lm, save_text_classifier

pytest.importorskip("litserve")
transformers = pytest.importorskip("transformers")
openai = pytest.importorskip("openai")


def test_text_classifier_answers_concurrent_requests_in_batches(cli, project):
    save_text_classifier(project / "clf")
    with Served(cli, project / "clf", "--max-batch-size", "8", "--batch-timeout", "0.05",
                "--log-dir", project / "logs") as s:
        texts = [f"the movie was {w} !" for w in ("good", "bad", "great", "awful")] * 6
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda t: httpx.post(s.url + "/predict", json={"text": t}, timeout=60), texts))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
        for a in answers:
            out = a.json()
            assert out["label"] in ("negative", "positive")
            assert set(out["probabilities"]) == {"negative", "positive"}
            assert abs(sum(out["probabilities"].values()) - 1) < 1e-9
        same = [a.json() for a, t in zip(answers, texts, strict=True) if t == texts[0]]
        for o in same:  # batched or not, one text gets one answer (up to float rounding in a batch)
            assert o["label"] == same[0]["label"]
            assert all(abs(o["probabilities"][k] - p) < 1e-5 for k, p in same[0]["probabilities"].items())
        metrics = httpx.get(s.url + "/metrics", timeout=10).text
        calls = float(re.search(r"modelbuild_serve_batch_size_count (\S+)", metrics).group(1))
        assert calls < len(texts), metrics  # several requests shared a model call
        bad = httpx.post(s.url + "/predict", json={"text": 3}, timeout=10)
        assert bad.status_code == 422 and bad.json()["detail"]["fields"][0]["field"] == "text"
        extra = httpx.post(s.url + "/predict", json={"text": "good", "lang": "en"}, timeout=10)
        assert extra.status_code == 422 and "lang" in extra.text


def test_causal_lm_speaks_openai_streaming_and_not(cli, project):
    save_causal_lm(project / "lm")
    tok = transformers.AutoTokenizer.from_pretrained(project / "lm")
    model = transformers.AutoModelForCausalLM.from_pretrained(project / "lm")
    ids = tok("once upon a time", return_tensors="pt")["input_ids"]
    expected = tok.decode(model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:],
                          skip_special_tokens=True)
    with Served(cli, project / "lm", "--api-key", "k", "--log-dir", project / "logs") as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="k", max_retries=0)
        done = client.completions.create(model="lm", prompt="once upon a time", max_tokens=6)
        assert done.choices[0].text == expected  # greedy, as model.generate in-process
        pieces = [c.choices[0].text for c in client.completions.create(model="lm", prompt="once upon a time",
                                                                      max_tokens=6, stream=True)]
        assert "".join(pieces) == expected and len([p for p in pieces if p]) > 1
        chat = client.chat.completions.create(model="lm", messages=[{"role": "user", "content": "hello world"}],
                                              max_tokens=5, temperature=0)
        content = chat.choices[0].message.content
        assert isinstance(content, str) and content
        streamed = client.chat.completions.create(model="lm", messages=[{"role": "user", "content": "hello world"}],
                                                  max_tokens=5, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0).completions.create(
                model="lm", prompt="hello", max_tokens=2)
        raw = httpx.post(s.url + "/v1/completions", json={"prompt": "hello"}, headers={"X-API-Key": "k"})
        assert raw.headers["x-model-digest"] and raw.headers["x-request-id"]

