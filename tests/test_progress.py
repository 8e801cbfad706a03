"""Progress without a terminal is a log line every few percent, not carriage-return frames."""

from __future__ import annotations

import io
import re

from funcml.progress import LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_redirected_bar_writes_one_line_every_five_percent():
    out = io.StringIO()
    bar = progress_bar(total=1000, desc="encode", unit="sig", file=out, leave=False)
    assert isinstance(bar, LineProgress)
    for _ in range(1000):
        bar.update(1)
    bar.set_postfix(psnr=29.123456)
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 20
    assert lines[0].startswith("encode: 50/1000 sig (5%)") and lines[-1].startswith("encode: 1000/1000 sig (100%)")
    percents = [int(re.search(r"\((\d+)%\)", line).group(1)) for line in lines]
    assert percents == list(range(5, 101, 5))


def test_big_updates_a_resumed_start_and_iteration():
    out = io.StringIO()
    bar = progress_bar(total=100, initial=40, desc="meta-train", unit="step", file=out)
    bar.update(30)  # 40 -> 70: one line, not six
    bar.update(30)
    bar.close()
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "meta-train: 70/100 step (70%)", "meta-train: 100/100 step (100%)"]
    out = io.StringIO()
    assert list(progress_bar(range(7), desc="chunks", file=out)) == list(range(7))
    assert out.getvalue().splitlines()[-1].startswith("chunks: 7/7 it (100%)")


def test_a_postfix_is_on_the_line_and_a_stop_before_the_end_is_reported_on_close():
    out = io.StringIO()
    with progress_bar(total=200, desc="train", file=out) as bar:
        bar.set_postfix(loss=0.5, step=3)
        bar.update(3)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("train: 3/200 it (2%)") and "loss=0.5, step=3" in out.getvalue()


def test_disabled_writes_nothing_and_a_terminal_gets_tqdm():
    out = io.StringIO()
    bar = progress_bar(total=10, file=out, disable=True)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""
    terminal = _Terminal()
    bar = progress_bar(total=10, file=terminal, desc="x")
    assert not isinstance(bar, LineProgress)
    bar.update(10)
    bar.close()
    assert "\r" in terminal.getvalue()


def test_meta_training_logs_lines_to_a_redirected_stderr(tmp_path, capsys, tiny_images, tiny_field, tiny_train):
    from funcml.encoders.trainer import MetaTrainer

    MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "model", progress=True).run()
    err = capsys.readouterr().err
    assert "\r" not in err and "meta-train: 12/12 step (100%)" in err
