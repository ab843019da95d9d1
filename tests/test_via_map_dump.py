"""`hardwire via-map dump`: any via map as $readmemh hex, one word per line; bad input is one error line."""

from __future__ import annotations

import re

import pytest
from test_cli import assert_one_line_error, hardwire

from hardwire.rtl.via_map import write_via_map

WORDS = [0x1ABCD, 0, 0x00F0F, 0x10001]  # 17 bits: the top hex digit holds one bit


@pytest.fixture
def vmap(tmp_path):
    return write_via_map(tmp_path / "t.vmap", WORDS, width=17, depth=6)


def readmemh(text: str, depth: int) -> list[int]:
    """What $readmemh puts in a memory of `depth` words: // comments, @address lines, hex words."""
    memory, address = [None] * depth, 0
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        if line.startswith("@"):
            address = int(line[1:], 16)
        elif line:
            memory[address], address = int(line, 16), address + 1
    return memory


def test_dump_prints_every_word_as_readmemh_hex(vmap):
    result = hardwire("via-map", "dump", vmap)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "// hardwire via map t.vmap: width 17 depth 6" and lines[2] == "@0"
    assert lines[3:] == ["1abcd", "00000", "00f0f", "10001", "00000", "00000"]
    assert readmemh(result.stdout, 6) == WORDS + [0, 0]


def test_dump_of_a_word_range_loads_at_its_address(vmap):
    result = hardwire("via-map", "dump", vmap, "--words", "2:4")
    assert result.returncode == 0, result.stderr
    assert readmemh(result.stdout, 6) == [None, None, 0x00F0F, 0x10001, None, None]
    assert hardwire("via-map", "dump", vmap, "--words", "5:").stdout.splitlines()[2:] == ["@5", "00000"]


def test_two_maps_differ_in_the_dump_where_their_words_do(tmp_path, vmap):
    other = write_via_map(tmp_path / "u.vmap", [WORDS[0], 1, *WORDS[2:]], width=17, depth=6)
    a, b = (hardwire("via-map", "dump", p).stdout.splitlines()[1:] for p in (vmap, other))
    assert [i for i in range(len(a)) if a[i] != b[i]] == [3]  # the line of word 1


@pytest.mark.parametrize("case, pattern", [
    ("missing", "missing.vmap: no such via-map file"),
    ("hex_text", "hex.vmap: not a hardwire via map"),
    ("truncated", "cut.vmap: 74 bytes; a map of 4 stored words of 13 bits has 75"),
    ("range_past_the_end", "t.vmap: words 2:7 are outside the map's 6 words"),
    ("range_backwards", "t.vmap: words 4:2 are outside"),
    ("range_not_numbers", "--words takes A:B (word addresses), not 'a:b'"),
])
def test_dump_refuses_bad_input_in_one_line(tmp_path, vmap, case, pattern):
    (tmp_path / "hex.vmap").write_text("// hardwire via map\n// width 17 depth 6\n1abcd\n")
    (tmp_path / "cut.vmap").write_bytes(vmap.read_bytes()[:-1])
    args = {"missing": [tmp_path / "missing.vmap"], "hex_text": [tmp_path / "hex.vmap"],
            "truncated": [tmp_path / "cut.vmap"], "range_past_the_end": [vmap, "--words", "2:7"],
            "range_backwards": [vmap, "--words", "4:2"], "range_not_numbers": [vmap, "--words", "a:b"]}[case]
    result = hardwire("via-map", "dump", *args)
    assert_one_line_error(result, pattern)
    assert result.stdout == "" and not re.search("Traceback", result.stderr)
