import json
import subprocess
import sys

import pytest

from deconas.cli import build_parser, main
from deconas.space.genotype import PAPER_GENOTYPE


def test_arch_json_reports_spec_parameters_and_mult_adds(capsys):
    assert main(["arch", PAPER_GENOTYPE, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 1_693_251
    # Hand count for the first conv alone: 3*64*9 weights at 640x360 LR pixels.
    assert info["mult_adds"] > 3 * 64 * 9 * 640 * 360
    assert [r["conv"] for r in info["node_table"]] == [["x_in"], ["x_in", "n0"], [], ["n1"]]


def test_arch_mult_adds_match_a_hand_count_for_a_tiny_network(capsys):
    # C=4, N=1, one node with only conv on x_in, x2, 1280x720 HR -> 640x360 LR pixels.
    main(["arch", "4", "--channels", "4", "--blocks", "1", "--json"])
    info = json.loads(capsys.readouterr().out)
    lr = 640 * 360
    hand = (3 * 4 * 9 + 4 * 4 * 9) * lr  # SFE1, SFE2
    hand += 4 * 4 * 9 * lr + (4 * 1 + 1 * 4)  # conv op; CA on a 1x1 map (C/4 = 1)
    hand += 8 * 4 * lr  # LFF over x_in, n0
    hand += 8 * 4 * lr + 4 * 4 * 9 * lr  # GFF 1x1 over F0, B0, then 3x3
    hand += 4 * 16 * 9 * lr + 4 * 3 * 9 * 1280 * 720  # upsampler conv, tail conv at HR
    assert info["mult_adds"] == hand


def test_arch_human_output_has_table(capsys):
    main(["arch", PAPER_GENOTYPE, "--scale", "3"])
    out = capsys.readouterr().out
    assert "1,877,891" in out and "separable reads" in out


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["7,6,4,3,0,2,2,3,4"],             # wrong length
    ["7,6,4,3,0,2,2,3,4,9"],           # out of range
    ["7,6,4,3,0,2,2,3,4,q"],           # letters
    [PAPER_GENOTYPE, "--ff-bits", "1011|11"],  # wrong GFF length for N=4
    [PAPER_GENOTYPE, "--ff-bits", "1021|1101"],  # not bits
    [PAPER_GENOTYPE, "--nodes", "5"],
])
def test_bad_genotype_exits_2_with_one_line(args):
    r = subprocess.run([sys.executable, "-m", "deconas.cli", "arch", *args], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args, says", [
    ([",".join(["1"] * 20_000)], "(39,999 characters)"),   # a wrong huge genotype is quoted by its head
    (["0," * 5_000 + "x" * 50_000], "is not a non-negative integer"),
    ([PAPER_GENOTYPE, "--nodes", "100000"], "--nodes 100000"),
    ([PAPER_GENOTYPE, "--channels", "100000000"], "--channels 100000000"),
    ([PAPER_GENOTYPE, "--blocks", "0"], "--blocks 0"),
])
def test_a_huge_or_out_of_bounds_argument_is_one_short_line(args, says, capsys):
    assert main(["arch", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and len(err[0]) < 300, err


def test_help_of_every_subcommand(capsys):
    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert {"arch", "eval", "search", "derive", "train", "upscale", "run"} <= set(subs)
    for name in [None, *subs]:
        with pytest.raises(SystemExit) as e:
            main(["--help"] if name is None else [name, "--help"])
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out
