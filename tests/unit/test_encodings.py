"""Encodings other than UTF-8: latin-1, cp1252 and UTF-16 (either byte order, or by the
file's byte-order mark). Chunks always travel as UTF-8 text; checkpoints stay raw byte
offsets; invalid input becomes U+FFFD and is counted; a restart resumes exactly where
the last chunk ended; and a bad encoding setting is one sentence."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness.main_process_runner import log_monitor
from main_process.sources.line_chunker import LineChunker
from main_process.sources.source_set import SourceSet
from main_process.sources.text_codecs import FileEncoding, Utf16Codec, codec, normalize
from tests.support.sources_helpers import RunningSources, append_bytes, open_spool, spooled

LINES = [f"{n:05d} Spieler Müller betritt die Zone ✓ 🚀 — ¡olé!\n" for n in range(300)]
TEXT = "".join(LINES)


def _chunk_all(data: bytes, name: str, max_bytes: int, seed: int) -> tuple[str, list[int], int]:
    """Feed ``data`` in random pieces; return the text, chunk end offsets, replacements."""
    rng = random.Random(seed)
    chunker = LineChunker(0, max_chunk_bytes=max_bytes, codec=FileEncoding(name).for_file(data[:2]))
    chunks = []
    offset = 0
    while offset < len(data):
        piece = data[offset : offset + rng.randint(1, 97)]
        chunks += chunker.feed(piece, offset, now=0.0)
        offset += len(piece)
    chunks += chunker.flush()
    return (
        "".join(c.text for c in chunks),
        [c.end_offset for c in chunks],
        chunker.invalid_bytes_replaced,
    )


@pytest.mark.parametrize("name", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("max_bytes", [16, 100, 4096])
def test_utf16_is_chunked_on_its_own_line_and_character_boundaries(
    name: str, max_bytes: int
) -> None:
    data = TEXT.encode(name)
    text, ends, replaced = _chunk_all(data, name, max_bytes, seed=max_bytes)
    assert text == TEXT
    assert replaced == 0
    assert all(end % 2 == 0 for end in ends)  # between code units
    for end in ends:  # never between the two halves of a surrogate pair
        unit = data[end - 2 : end]
        high = unit[1] if name == "utf-16-le" else unit[0]
        assert not 0xD8 <= high <= 0xDB


def test_utf16_by_its_byte_order_mark_and_the_mark_is_not_text() -> None:
    for mark, name in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        data = mark + TEXT.encode(name)
        text, ends, _ = _chunk_all(data, "utf-16", 200, seed=1)
        assert text == TEXT
        assert ends[-1] == len(data)
    # No mark: little-endian, as Windows writes it.
    assert _chunk_all(TEXT.encode("utf-16-le"), "utf-16", 200, seed=2)[0] == TEXT


def test_invalid_input_becomes_replacement_characters_and_is_counted() -> None:
    lone = "a".encode("utf-16-le") + b"\x00\xd8" + "b\n".encode("utf-16-le")
    assert _chunk_all(lone, "utf-16-le", 64, seed=3)[0::2] == ("a\ufffdb\n", 1)
    # cp1252 leaves five bytes undefined; latin-1 defines every byte.
    assert codec("cp1252").decode(b"caf\xe9 \x81\x8d!") == ("café \ufffd\ufffd!", 2)
    assert codec("latin-1").decode(b"caf\xe9 \x81") == ("café \x81", 0)
    # A genuine U+FFFD is not a replacement.
    assert codec("utf-16-le").decode("\ufffd".encode("utf-16-le")) == ("\ufffd", 0)


def test_an_incomplete_tail_waits_for_its_writer() -> None:
    le = Utf16Codec("utf-16-le")
    pair = "🚀".encode("utf-16-le")  # a surrogate pair: 4 bytes
    assert le.incomplete_tail(bytearray(b"a\x00" + pair[:2])) == 2
    assert le.incomplete_tail(bytearray(b"a\x00" + pair[:3])) == 3
    assert le.incomplete_tail(bytearray(b"a\x00" + pair)) == 0
    assert le.incomplete_tail(bytearray(b"a\x00b")) == 1


def test_encoding_names_python_knows_are_accepted_others_are_not() -> None:
    assert normalize("UTF8") == "utf-8"
    assert normalize("iso-8859-1") == "latin-1"
    assert normalize("windows-1252") == "cp1252"
    assert normalize("UTF-16LE") == "utf-16-le"
    with pytest.raises(ValueError, match="not supported"):
        normalize("shift_jis")
    with pytest.raises(ValueError, match="unknown encoding"):
        normalize("klingon")


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("utf-16", lambda text: b"\xff\xfe" + text.encode("utf-16-le")),
        ("utf-16", lambda text: b"\xfe\xff" + text.encode("utf-16-be")),
        ("cp1252", lambda text: text.replace("✓", "?").replace("🚀", "?").encode("cp1252")),
        (
            "latin-1",
            lambda text: (
                text.replace("✓", "?").replace("🚀", "?").replace("—", "-").encode("latin-1")
            ),
        ),
    ],
)
async def test_files_in_other_encodings_ship_as_utf8_text_and_resume_exactly(
    tmp_path: Path, name: str, encode: object
) -> None:
    assert callable(encode)
    log = tmp_path / "game.log"
    first, second = LINES[:150], LINES[150:]
    expected = "".join(first + second)
    if name != "utf-16":
        expected = expected.replace("✓", "?").replace("🚀", "?")
        if name == "latin-1":
            expected = expected.replace("—", "-")
    whole = encode("".join(first + second))
    head = encode("".join(first))
    log.write_bytes(head)

    async def follow(lines: int) -> None:
        spool = open_spool(tmp_path / "data")
        sources = SourceSet([str(log)], [], spool, encoding=name)
        async with RunningSources(sources) as running:
            await running.wait_until(lambda: running.quiet([log], lines), 10, f"{lines} lines")
        assert sources.counters().invalid_bytes_replaced == 0
        spool.close()

    await follow(150)
    append_bytes(log, whole[len(head) :])  # the rest, continuing the same encoding
    await follow(150)
    spool = open_spool(tmp_path / "data")
    chunks = spooled(spool)
    assert "".join(c.text for c in chunks) == expected
    checkpoint = spool.checkpoints()[0]
    assert checkpoint.offset == len(whole)  # raw bytes, not characters
    spool.close()


async def test_each_pattern_may_have_its_own_encoding(tmp_path: Path) -> None:
    western = tmp_path / "western.log"
    wide = tmp_path / "wide.log"
    western.write_bytes("Grüße\n".encode("cp1252"))
    wide.write_bytes(b"\xff\xfe" + "Grüße ✓\n".encode("utf-16-le"))
    spool = open_spool(tmp_path / "data")
    sources = SourceSet(
        [str(western), str(wide)], [], spool, encoding="cp1252", encodings={str(wide): "utf-16"}
    )
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([western, wide], 2), 10, "both files")
    assert sorted(c.text for c in spooled(spool)) == ["Grüße\n", "Grüße ✓\n"]
    spool.close()


def test_a_bad_encoding_setting_is_one_sentence(tmp_path: Path) -> None:
    answer = log_monitor("run", "--headless", "--encoding", "klingon", "--data-dir", str(tmp_path))
    assert answer.returncode == 2
    assert answer.stderr.strip() == "log-monitor: --encoding: unknown encoding 'klingon'."
    config = tmp_path / "settings.toml"
    config.write_text('[encodings]\n"/var/log/*.log" = "shift_jis"\n')
    answer = log_monitor("run", "--headless", "--config", str(config), "--data-dir", str(tmp_path))
    assert answer.returncode == 2
    assert "shift_jis" in answer.stderr
    assert "not supported" in answer.stderr
    assert "Traceback" not in answer.stderr
