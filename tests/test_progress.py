"""The package's progress bars leave one plain line when they close, so an exported notebook shows what ran."""
from dlb_edu.progress import Progress, format_bytes


def test_a_finished_bar_prints_what_ran(capsys):
    with Progress(total=63, desc="baseline epoch 1/4") as bar:
        for _ in range(63):
            bar.update(1)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("baseline epoch 1/4: 63/63 steps in ") and out[0].endswith(" s")


def test_a_bar_closed_early_says_where_it_stopped(capsys):
    bar = Progress(total=10, initial=2, desc="dlb epoch 2/3")
    bar.update(3)
    bar.close()
    bar.close()  # twice: one line
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("dlb epoch 2/3: stopped at 5/10 steps after ")


def test_a_disabled_bar_prints_nothing(capsys):
    with Progress(total=5, desc="quiet", disable=True) as bar:
        bar.update(5)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_bytes_are_counted_in_binary_units(capsys):
    with Progress(total=3 * 1024 ** 2, unit="B", desc="cifar-10-python.tar.gz from example.org") as bar:
        bar.update(3 * 1024 ** 2)
    assert capsys.readouterr().out.startswith("cifar-10-python.tar.gz from example.org: 3.0 MiB of 3.0 MiB in ")
    assert [format_bytes(n) for n in (512, 2048, 5 * 1024 ** 3)] == ["512 B", "2.0 KiB", "5.0 GiB"]


def test_a_bar_without_a_total_counts_what_came(capsys):
    with Progress(total=None, desc="stream", unit="B") as bar:
        bar.update(1536)
    assert capsys.readouterr().out.startswith("stream: 1.5 KiB in ")
