"""Progress: a bar on a terminal, plain lines with the same figures in logs."""

import io

from deconas.progress import LineProgress, bar, format_seconds


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_come_every_interval_with_count_rate_eta_and_postfix():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(total=100, desc="train", unit="step", file=out, every=30, clock=clock)
    for _ in range(10):  # 10 steps in 20 s: not yet time for a line
        clock.t += 2
        p.update(1)
    assert out.getvalue() == ""
    p.set_postfix(loss="0.0312", lr="1.00e-03")
    for _ in range(5):  # 15 steps in 30 s: 0.5 step/s, 85 left -> 170 s
        clock.t += 2
        p.update(1)
    lines = out.getvalue().splitlines()
    assert lines == ["train: 15/100 step (15%), 2.00 s/step, elapsed 30s, ETA 2m50s, loss=0.0312, lr=1.00e-03"]
    p.close()
    assert len(out.getvalue().splitlines()) == 2  # the last figures once more at the end
    assert "\r" not in out.getvalue()


def test_rate_and_eta_count_only_this_sessions_steps_after_a_resume():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(total=1000, initial=600, desc="search", unit="step", file=out, every=10, clock=clock)
    clock.t += 10
    p.update(40)  # 40 steps in 10 s since the resume: 4 step/s, 360 left -> 90 s
    assert out.getvalue().strip() == "search: 640/1000 step (64%), 4.00 step/s, elapsed 10s, ETA 1m30s"


def test_iterating_counts_and_a_job_with_nothing_done_prints_nothing():
    out, clock = io.StringIO(), Clock()
    assert list(LineProgress(["a", "b", "c"], desc="derive", file=out, every=1e9, clock=clock)) == ["a", "b", "c"]
    assert out.getvalue().strip().startswith("derive: 3/3 it (100%)")
    quiet = io.StringIO()
    with LineProgress(total=5, file=quiet, clock=clock):
        pass
    assert quiet.getvalue() == ""


def test_disabled_progress_is_silent_but_messages_still_show_on_stdout_as_with_tqdm(capsys):
    out, clock = io.StringIO(), Clock()
    p = LineProgress(total=3, file=out, disable=True, every=0, clock=clock)
    p.update(3)
    p.write("epoch 1  loss 0.1")
    p.close()
    assert out.getvalue() == "" and capsys.readouterr().out == "epoch 1  loss 0.1\n"


def test_a_terminal_gets_a_bar_and_anything_else_plain_lines(monkeypatch):
    monkeypatch.delenv("DECONAS_PROGRESS", raising=False)
    from tqdm import tqdm

    t = bar(total=3, file=Terminal())
    assert isinstance(t, tqdm)
    t.close()
    assert isinstance(bar(total=3, file=io.StringIO()), LineProgress)
    monkeypatch.setenv("DECONAS_PROGRESS", "lines")
    assert isinstance(bar(total=3, file=Terminal()), LineProgress)


def test_seconds_read_as_a_person_writes_them():
    assert [format_seconds(s) for s in (0, 42.4, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]
