import pytest
from hypothesis import given, strategies as st

from deconas.space.genotype import (PAPER_GENOTYPE, Genotype, GenotypeError, all_ones, node_table, num_pairs,
                              parse)

PAPER_BITS = "1 1 1 1 1 0 1 0 0 0 1 1 0 0 0 0 1 0 0 1 0 0 1 1 1 0 0 0 0 1"


def test_paper_integers_and_release_bits_are_the_same_genotype():
    a, b = parse(PAPER_GENOTYPE), parse(PAPER_BITS)
    assert a == b
    assert a.bits() == PAPER_BITS
    assert str(a) == PAPER_GENOTYPE


def test_paper_node_table_matches_spec():
    # SPEC section 2's table, written out by hand.
    expected = {
        0: {"conv": ["x_in"], "sep": ["x_in"], "dil": ["x_in"]},
        1: {"conv": ["x_in", "n0"], "sep": ["x_in"], "dil": []},
        2: {"conv": [], "sep": ["x_in", "n1"], "dil": ["x_in"]},
        3: {"conv": ["n1"], "sep": ["x_in", "n0"], "dil": ["n0", "n2"]},
    }
    assert dict(node_table(parse(PAPER_GENOTYPE))) == expected


def test_ff_bits_parse_in_every_form():
    g = parse(PAPER_GENOTYPE + "|1011|1101")
    assert g.lff == (1, 0, 1, 1) and g.gff == (1, 1, 0, 1)
    assert parse(PAPER_GENOTYPE, ff_bits="1 0 1 1 1 1 0 1", blocks=4) == g
    assert parse(PAPER_BITS + " 1 0 1 1 1 1 0 1", blocks=4) == g
    assert parse(str(g)) == g
    # LFF reads x_in, n1, n2 by its bits and always the last node n3 (index 4).
    assert g.lff_inputs() == (0, 2, 3, 4)
    assert g.gff_inputs(4) == (0, 1, 3, 4)


def test_ff_off_reads_everything():
    g = parse(PAPER_GENOTYPE)
    assert g.lff_inputs() == (0, 1, 2, 3, 4)
    assert g.gff_inputs(4) == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("text, words", [
    ("7,6,4,3,0,2,2,3,4", "9 values"),
    ("7,6,4,3,0,2,2,3,4,8", "0..7"),
    ("7,6,4,3,0,2,2,3,4,a", "'a' is not"),
    ("", "empty"),
    (PAPER_GENOTYPE + "|1021|1101", "0 or 1"),
    (PAPER_GENOTYPE + "|101|1101", "LFF bits; expected M=4"),
])
def test_bad_genotypes_say_what_is_wrong(text, words):
    with pytest.raises(GenotypeError, match=words):
        parse(text)


def test_wrong_length_for_requested_nodes():
    with pytest.raises(GenotypeError, match="M=8"):
        parse(PAPER_GENOTYPE, nodes=8)


@given(st.integers(1, 8).flatmap(lambda m: st.tuples(
    st.just(m), st.lists(st.integers(0, 7), min_size=num_pairs(m), max_size=num_pairs(m)),
    st.one_of(st.none(), st.lists(st.integers(0, 1), min_size=m, max_size=m)),
    st.integers(1, 6))))
def test_round_trip_through_both_string_forms(case):
    m, cell, lff, n = case
    g = Genotype(tuple(cell), None if lff is None else tuple(lff), None if lff is None else (1,) * n)
    assert parse(str(g)) == g
    try:  # no hint about M: the form decides, or the string is refused as ambiguous
        assert parse(g.bits(), blocks=n if g.ff else None) == g
    except GenotypeError as e:
        assert "ambiguous" in str(e)
    assert parse(g.bits(), nodes=m, blocks=n if g.ff else None) == g  # the hint settles it
    assert Genotype.from_dict(g.to_dict()) == g


def test_all_ones_is_every_bit_set():
    assert all_ones(4).cell == (7,) * 10
