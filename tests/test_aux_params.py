"""Every row of the aux-net parameter table: ours equal the official count, or differ by exactly
the mechanism the row names."""

import re

import pytest

from hpff_bench.aux.param_table import ROWS, markdown


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method}-{r.net}-C{r.channels}".replace(" ", "_"))
def test_aux_param_row(row):
    ours = row.ours()
    if not row.difference:
        assert ours == row.official
        return
    # the difference names its size: "ours N fewer" / "ours N more"
    m = re.match(r"ours ([\d,]+) (fewer|more)", row.difference)
    assert m, row.difference
    delta = int(m.group(1).replace(",", ""))
    assert ours - row.official == (delta if m.group(2) == "more" else -delta)


def test_dgl_and_decoder_differences_follow_their_mechanism():
    for r in ROWS:
        if r.net == "mlp-sr":
            assert r.official - r.ours() == 14 * r.channels  # 3 linear biases of 4C + an unused BN2d (2C)
        if r.net == "decoder":
            assert r.official - r.ours() == 12 + 3


def test_readme_table_is_the_commands_output():
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert markdown() in readme.read_text()


def test_command_prints_every_row(cli):
    code, out, err = cli("aux-params")
    assert code == 0, err
    assert len(out.strip().splitlines()) == len(ROWS) + 1 and "43,274" in out
