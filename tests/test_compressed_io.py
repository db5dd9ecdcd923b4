"""Canonical Huffman coding, the relative index, and the compressed file: round trips and
hostile files (each refused with an error naming the file and the field)."""
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsenet import huffman
from sparsenet.compressed_io import (MAGIC, CompressedFileError, LayerCodes, absolute_positions,
                                     read_compressed, relative_index, write_compressed)

FEW = settings(max_examples=30, deadline=None, derandomize=True)


# ----- Huffman -----------------------------------------------------------------------------------
@FEW
@given(counts=st.lists(st.integers(0, 1000), min_size=2, max_size=64))
def test_huffman_lengths_are_an_optimal_prefix_code(counts):
    counts = np.array(counts)
    lengths = huffman.code_lengths(counts).astype(np.int64)
    used = counts > 0
    assert ((lengths > 0) == used).all()
    if not used.any():
        return
    if used.sum() >= 2:
        assert np.sum(2.0 ** -lengths[used]) == 1.0               # a full tree: Kraft equality
        p = counts[used] / counts.sum()
        entropy = -(p * np.log2(p)).sum()
        mean = huffman.mean_bits(counts, lengths)
        assert entropy - 1e-9 <= mean < entropy + 1                # Shannon's bounds
    codes = huffman.canonical_codes(lengths)
    words = {format(int(c), f"0{l}b") for c, l in zip(codes[used], lengths[used])}
    assert len(words) == used.sum()
    assert not any(a != b and b.startswith(a) for a in words for b in words)   # prefix-free


def test_huffman_known_code_and_a_lone_symbol():
    lengths = huffman.code_lengths(np.array([5, 0, 2, 1, 1]))
    np.testing.assert_array_equal(lengths, [1, 0, 2, 3, 3])
    np.testing.assert_array_equal(huffman.canonical_codes(lengths), [0b0, 0, 0b10, 0b110, 0b111])
    np.testing.assert_array_equal(huffman.code_lengths(np.array([0, 7, 0])), [0, 1, 0])


def test_huffman_limits_code_lengths():
    fibonacci = [1, 1]
    while len(fibonacci) < 30:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])          # the deepest possible tree
    counts = np.array(fibonacci)
    assert huffman.code_lengths(counts, max_length=32).max() == 29
    limited = huffman.code_lengths(counts, max_length=10)
    assert limited.max() <= 10 and np.sum(2.0 ** -limited.astype(np.int64)) <= 1
    symbols = np.repeat(np.arange(30), 3).astype(np.uint8)
    stream, n_bits = huffman.encode(symbols, limited)
    np.testing.assert_array_equal(huffman.decode(stream, n_bits, limited, symbols.size), symbols)


def test_fixed_width_round_trip(rng):
    symbols = rng.integers(0, 32, 101).astype(np.uint8)
    stream, n_bits = huffman.pack_fixed(symbols, 5)
    assert n_bits == 505 and stream.size == 64
    np.testing.assert_array_equal(huffman.unpack_fixed(stream, n_bits, 5, 101), symbols)
    with pytest.raises(ValueError, match="2\\^5"):
        huffman.pack_fixed(np.array([32]), 5)


# ----- relative index --------------------------------------------------------------------------
@FEW
@given(size=st.integers(1, 3000), density=st.floats(0.0, 1.0), bits=st.integers(1, 8),
       seed=st.integers(0, 2 ** 31 - 1))
def test_relative_index_round_trip(size, density, bits, seed):
    positions = np.nonzero(np.random.default_rng(seed).random(size) < density)[0]
    symbols = relative_index(positions, bits)
    assert symbols.dtype == np.uint8 and symbols.max(initial=0) < 2 ** bits
    np.testing.assert_array_equal(absolute_positions(symbols, bits), positions)


def test_relative_index_fillers_by_hand():
    # 3 bits: M = 7; distances 1..7 are direct, a filler advances 7 and carries no weight
    np.testing.assert_array_equal(relative_index([0, 7, 15, 29], 3), [0, 6, 7, 0, 7, 6])
    np.testing.assert_array_equal(relative_index([6, 13], 3), [6, 6])     # d = 7: no filler


# ----- the file -------------------------------------------------------------------------------
def make_layer(rng, name="fc", shape=(12, 40), density=0.15, clusters=5, bits=3, index_bits=3):
    mask = rng.random(shape) < density
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(mask)[1].astype(np.int32)
    codes = rng.integers(0, clusters, indices.size).astype(np.uint8)
    codebook = rng.standard_normal(clusters).astype(np.float32)
    return LayerCodes(name, "linear", shape, indptr, indices, codes, codebook, bits, index_bits)


@pytest.mark.parametrize("use_huffman", [True, False])
def test_file_round_trip(tmp_path, rng, use_huffman):
    layers = [make_layer(rng), make_layer(rng, "conv", (4, 75), 0.5, 8, 3, 2)]
    dense = {"fc.bias": rng.standard_normal(12).astype(np.float32),
             "conv.bias": np.zeros(4, np.float32), "step": np.array([3], np.int64)}
    path = tmp_path / "m.sndc"
    stats = write_compressed(path, layers, dense, "mlp:40-12", (1, 1, 40), 12, use_huffman)
    assert stats["bytes"] == path.stat().st_size
    back = read_compressed(path)
    assert back.header["model"] == "mlp:40-12"
    for a, b in zip(layers, back.layers):
        for field in ("indptr", "indices", "codes", "codebook"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert (a.name, a.shape, a.weight_bits, a.index_bits) == (b.name, b.shape, b.weight_bits,
                                                                 b.index_bits)
    assert sum(layer.file_bytes for layer in back.layers) + sum(
        v.nbytes for v in dense.values()) + stats["header_bytes"] == stats["bytes"]
    for key, value in dense.items():
        np.testing.assert_array_equal(back.dense[key], value)
        assert back.dense[key].dtype == value.dtype


@pytest.fixture
def good_file(tmp_path, rng):
    path = tmp_path / "good.sndc"
    write_compressed(path, [make_layer(rng)], {"fc.bias": np.ones(12, np.float32)}, "x")
    return path


def split(path):
    data = path.read_bytes()
    (size,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12:12 + size]), data[12 + size:]


def rewrite(path, header, payload):
    text = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(text)) + text + payload)


def refused(path, *fields):
    with pytest.raises(CompressedFileError) as err:
        read_compressed(path)
    message = str(err.value)
    assert str(path) in message
    for field in fields:
        assert field in message, message
    return message


def test_truncated_bitstream_is_refused(good_file):
    header, payload = split(good_file)
    rewrite(good_file, header, payload[:-60])                     # cuts into the index stream
    refused(good_file, "layers[0]", "truncated")


def test_a_stream_shorter_than_its_symbols_is_refused(good_file):
    header, payload = split(good_file)
    header["layers"][0]["weights"]["bits"] -= 5
    rewrite(good_file, header, payload)
    refused(good_file, "layers[0].weights")


def test_malformed_huffman_table_is_refused(good_file):
    header, payload = split(good_file)
    table = bytes([1, 1, 1, 0, 0])                               # three 1-bit codes
    rewrite(good_file, header, payload[:20] + table + payload[25:])
    refused(good_file, "layers[0].weights.table", "malformed Huffman table")


def test_codes_out_of_range_are_refused(tmp_path, rng):
    path = tmp_path / "fixed.sndc"
    layer = make_layer(rng, clusters=8)
    write_compressed(path, [layer], {}, None, use_huffman=False)
    header, payload = split(path)
    header["layers"][0]["clusters"] = 6                           # codes 6 and 7 now point nowhere
    rewrite(path, header, payload[:24] + payload[32:])            # a 6-entry codebook
    refused(path, "layers[0].weights", "codes out of range")


def test_header_payload_mismatch_is_refused(good_file):
    header, payload = split(good_file)
    rewrite(good_file, header, payload + b"\0\0\0\0")
    refused(good_file, "payload", "describes")
    header["layers"][0]["nnz"] += 1
    header["layers"][0]["entries"] += 1
    rewrite(good_file, header, payload)
    refused(good_file, "layers[0]")
    header["layers"][0]["nnz"] -= 1
    header["layers"][0]["entries"] -= 1
    header["dense"][0]["shape"] = [13]
    rewrite(good_file, header, payload)
    refused(good_file, "dense[0]", "truncated")


@pytest.mark.parametrize("edit, field", [
    (lambda h: h.update(format="other"), "header.format"),
    (lambda h: h["layers"][0].update(weight_bits=9), "layers[0].weight_bits"),
    (lambda h: h["layers"][0].update(shape=[12, "40"]), "layers[0].shape"),
    (lambda h: h["layers"][0]["index"].update(coding="lzw"), "layers[0].index.coding"),
    (lambda h: h["layers"][0].update(nnz=True), "layers[0].nnz"),
    (lambda h: h.update(layers={}), "header.layers"),
    (lambda h: h["dense"][0].update(dtype="object"), "dense[0]"),
])
def test_bad_header_fields_are_named(good_file, edit, field):
    header, payload = split(good_file)
    edit(header)
    rewrite(good_file, header, payload)
    refused(good_file, field)


def test_not_a_compressed_file(tmp_path, good_file):
    other = tmp_path / "x.bin"
    other.write_bytes(b"PK\x03\x04" + bytes(20))
    refused(other, "magic")
    data = good_file.read_bytes()
    good_file.write_bytes(data[:12] + b"{not json" + data[21:])
    refused(good_file, "header", "JSON")
    good_file.write_bytes(data[:10])
    refused(good_file, "header")
    with pytest.raises(FileNotFoundError):
        read_compressed(tmp_path / "missing.sndc")


def test_an_index_past_the_matrix_is_refused(tmp_path, rng):
    layer = make_layer(rng, shape=(3, 5), density=0.9)
    path = tmp_path / "m.sndc"
    write_compressed(path, [layer], {}, None)
    header, payload = split(path)
    header["layers"][0]["shape"] = [2, 5]
    rewrite(path, header, payload)
    refused(path, "layers[0]")


def test_hostile_sizes_are_refused_before_anything_is_allocated(good_file):
    header, payload = split(good_file)
    for edit, field in ((lambda h: h["layers"][0].update(entries=10 ** 15), "layers[0].index.bits"),
                        (lambda h: h["layers"][0].update(shape=[10 ** 12, 10 ** 12]),
                         "layers[0].shape"),
                        (lambda h: h["dense"][0].update(shape=[2 ** 40, 2 ** 40]), "dense[0]")):
        changed = json.loads(json.dumps(header))
        edit(changed)
        rewrite(good_file, changed, payload)
        refused(good_file, field)
    nested = "[" * 100_000 + "]" * 100_000
    good_file.write_bytes(MAGIC + struct.pack("<I", len(nested)) + nested.encode())
    refused(good_file, "header")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_any_cut_or_flipped_byte_is_refused_or_read_never_a_crash(tmp_path_factory, data):
    """A hostile file, cut anywhere or with any byte changed, either reads back (a change that
    keeps it well-formed, e.g. in a codebook value) or raises CompressedFileError naming the
    file: never another exception, never an allocation the header did not justify."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("fuzz") / "m.sndc"
    write_compressed(path, [make_layer(rng), make_layer(rng, "b", (4, 9), 0.5, 8, 3, 2)],
                     {"fc.bias": np.ones(12, np.float32)}, "x")
    original = path.read_bytes()
    if data.draw(st.booleans(), label="cut"):
        hostile = original[:data.draw(st.integers(0, len(original) - 1), label="length")]
    else:
        where = data.draw(st.integers(0, len(original) - 1), label="where")
        byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[where]), label="byte")
        hostile = original[:where] + bytes([byte]) + original[where + 1:]
    path.write_bytes(hostile)
    try:
        back = read_compressed(path)
    except CompressedFileError as err:
        assert str(path) in str(err)
        return
    for layer in back.layers:                       # what reads back is internally consistent
        rows, cols = layer.shape
        assert layer.indptr[0] == 0 and layer.indptr[-1] == layer.indices.size == layer.codes.size
        assert np.all(np.diff(layer.indptr) >= 0) and len(layer.indptr) == rows + 1
        assert layer.indices.size == 0 or (layer.indices.min() >= 0 and layer.indices.max() < cols)
        assert layer.codes.size == 0 or layer.codes.max() < layer.codebook.size
