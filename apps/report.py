"""Write a run's report: ``report.md``, ``report.html`` and ``plots/*.png``.

    python -m apps.report runs/default
    python -m apps.report runs/default --compare runs/e2e   # draw the end-to-end baseline too

The training run writes the same report when it ends; this regenerates it (e.g. after probes).
"""

from __future__ import annotations

from absl import flags

from apps import cli

flags.DEFINE_list("compare", [], "Other run directories (e.g. the end-to-end baseline) to draw beside this one.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from layerwise.run.report import write_report

    if len(argv) != 2:
        cli.fail("usage: python -m apps.report WORKDIR [--compare OTHER_WORKDIR]")
    print(write_report(argv[1], FLAGS.compare))


def console() -> None:
    """The installed ``layerwise-report`` command (``python -m apps.report`` from a checkout)."""
    cli.run(main)


if __name__ == "__main__":
    console()
