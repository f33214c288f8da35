"""The embedding store's encoding half: vectors as the model gives them, shards reused by content, a damaged
or edited shard (and only it) re-encoded, the dtype in the key, the source read as a stream; and the
streaming text readers it is fed by."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from embforge.cache import encode_cached
from embforge.errors import EmbforgeError
from embforge.model import Encoder
from embforge.store.encode import StoreStats, encode_store
from embforge.store.fingerprint import text_hashes, texts_digest

TEXTS = [f"{w} {v} the {u}" for w, v, u in zip(
    "cat dog bird fish man woman child tree car road".split(), "runs jumps sleeps eats play learn train test find "
    "search".split(), "house city water fire light dark game music cell gene".split())]  # 10 texts: shards 3+3+3+1


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


@pytest.fixture(scope="module")
def enc(tiny_bert):
    return Encoder.from_pretrained(tiny_bert, device="cpu")


def spy_encode(monkeypatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    original = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        calls.append(tuple(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    return calls


def test_vectors_are_the_models_and_a_second_run_encodes_nothing(enc, tmp_path, monkeypatch):
    store, stats = encode_store(enc, TEXTS, shard_size=3, root=tmp_path / "s", batch_size=2)
    assert stats == StoreStats(rows=10, shards=4, encoded=4, reused=0)
    assert [(s.start, s.rows) for s in store.shards] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    np.testing.assert_allclose(store.to_array(), enc.encode(TEXTS), atol=1e-6)
    for i, s in enumerate(store.shards):  # named by its texts; row hashes are the texts' own
        assert s.digest == texts_digest(TEXTS[s.start:s.stop])
        np.testing.assert_array_equal(store.shard_hashes(i), text_hashes(TEXTS[s.start:s.stop]))
    manifest = json.loads(next(store.root.glob("manifest-*.json")).read_text())
    assert [(m["digest"], m["start"], m["stop"]) for m in manifest["shards"]] == [
        (s.digest, s.start, s.stop) for s in store.shards]

    calls = spy_encode(monkeypatch)
    again, stats = encode_store(enc, TEXTS, shard_size=3, root=tmp_path / "s", batch_size=2)
    assert stats == StoreStats(rows=10, shards=4, encoded=0, reused=4) and calls == []
    np.testing.assert_array_equal(again.to_array(), store.to_array())


def test_one_edited_text_re_encodes_its_shard_only(enc, tmp_path, monkeypatch):
    encode_store(enc, TEXTS, shard_size=3, root=tmp_path)
    edited = [*TEXTS[:4], "a small red bird", *TEXTS[5:]]
    calls = spy_encode(monkeypatch)
    store, stats = encode_store(enc, edited, shard_size=3, root=tmp_path)
    assert calls == [tuple(edited[3:6])] and (stats.encoded, stats.reused) == (1, 3)
    np.testing.assert_allclose(store.to_array(), enc.encode(edited), atol=1e-6)


def test_a_damaged_shard_is_re_encoded_with_a_warning(enc, tmp_path, monkeypatch, caplog):
    store, _ = encode_store(enc, TEXTS, shard_size=3, root=tmp_path)
    path = store.shards[2].path
    raw = bytearray(path.read_bytes())
    raw[-16:] = bytes(16)  # the last rows' vector bytes, same size: only the checksum can tell
    path.write_bytes(bytes(raw))
    calls = spy_encode(monkeypatch)
    with caplog.at_level(logging.WARNING):
        again, stats = encode_store(enc, TEXTS, shard_size=3, root=tmp_path)
    assert "fail their checksum" in caplog.text and str(path) in caplog.text
    assert calls == [tuple(TEXTS[6:9])] and stats.encoded == 1
    np.testing.assert_allclose(again.to_array(), enc.encode(TEXTS), atol=1e-6)


def test_float16_store_is_its_own_cache_entry(enc, tmp_path):
    full, _ = encode_store(enc, TEXTS, shard_size=4, root=tmp_path)
    half, stats = encode_store(enc, TEXTS, shard_size=4, root=tmp_path, dtype="float16")
    assert stats.encoded == 3, "float16 vectors must not be served from the float32 entry (or back)"
    assert half.root != full.root and half.shard_array(0).dtype == np.float16
    np.testing.assert_allclose(half.to_array(), full.to_array(), atol=2e-3)
    assert np.abs(half.to_array() - full.to_array()).max() > 0  # really rounded, not float32 renamed


def test_the_source_is_read_as_a_stream(enc, tmp_path, monkeypatch):
    """Each shard is encoded as soon as its texts have been read, not after the whole source."""
    read: list[int] = []

    class Source:
        def __iter__(self):
            for t in TEXTS:
                read.append(1)
                yield t

    seen_at: list[int] = []
    original = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, texts, *a, **k: (seen_at.append(len(read)),
                                                                          original(self, texts, *a, **k))[1])
    encode_store(enc, Source(), shard_size=3, root=tmp_path)
    assert seen_at == [3, 6, 9, 10]


@pytest.mark.parametrize("source", [(t for t in TEXTS), iter(TEXTS)], ids=["generator", "iterator"])
def test_a_one_shot_iterator_is_refused(enc, tmp_path, source):
    with pytest.raises(TypeError, match="re-iterable"):
        encode_store(enc, source, root=tmp_path)
    assert not tmp_path.joinpath("cache").exists()


def test_no_cache_leaves_nothing_behind(enc, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    emb, hit = encode_cached(enc, TEXTS, use_cache=False)
    assert hit is False and emb.shape == (10, enc.embedding_dim)
    np.testing.assert_allclose(emb, enc.encode(TEXTS), atol=1e-6)
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------ streaming readers
def test_text_file_streams_again_on_each_pass_with_ids(tmp_path):
    from embforge.data.texts import TextFile, read_texts

    src = tmp_path / "in.jsonl"
    src.write_text('{"_id": "a", "title": "T", "text": "one"}\n\n{"id": 7, "text": "two"}\n')
    both = TextFile(src, "title+text")
    assert list(both) == ["T one", "two"] and list(both) == ["T one", "two"] and both.ids() == ["a", "7"]
    assert read_texts(src, "title+text") == (["T one", "two"], ["a", "7"])
    src.write_text('{"_id": "a", "text": "one"}\n{"text": "two"}\n')
    assert TextFile(src).ids() is None
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"\xef\xbb\xbffirst\r\n\nthird\n")
    assert list(TextFile(txt)) == ["first", "", "third"] and TextFile(txt).ids() is None
    txt.write_bytes(b"ok\nbad \xff\n")
    with pytest.raises(EmbforgeError, match=r"in.txt:2: not valid UTF-8"):
        list(TextFile(txt))


def test_beir_corpus_streams_title_text_and_refuses_a_repeated_id(tmp_path):
    from embforge.data.texts import BeirCorpus

    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "x"}\n{"_id": 2, "text": "y"}\n')
    corpus = BeirCorpus(tmp_path)
    assert list(corpus) == ["T x", "y"] and corpus.ids() == ["d1", "2"]
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "y"}\n'
                                           '{"_id": "d1", "text": "z"}\n')
    with pytest.raises(EmbforgeError, match=r"corpus.jsonl:3: duplicate _id 'd1' \(first seen at .*corpus.jsonl:1\)"):
        list(BeirCorpus(tmp_path / "corpus.jsonl"))
