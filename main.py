"""Sandra Desktop entry point.

    sandra                       the window (local realtime server, no key needed)
    sandra serve …               the local realtime server
    sandra metrics-server …      the metrics receiver
    sandra talk …                one call from the command line
    sandra --self-test           headless checks; exit 0 only if all pass
    sandra --screenshot PATH     render the window offscreen to a PNG

Heavy modules are imported only by the command that needs them, so the window paints
fast and `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

__version__ = "0.1.0"

# Subcommands and the function that runs each (it parses its own arguments).
SUBCOMMANDS = {
    "serve": ("server.realtime.cli:main", "run the local realtime server"),
    "metrics-server": ("server.metrics.cli:main", "run the metrics receiver"),
    "talk": ("core.talk:main", "make one call from the command line"),
}


def _call(target: str, argv: list[str]) -> int:
    module, _, name = target.partition(":")
    return int(getattr(importlib.import_module(module), name)(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    epilog = "commands:\n" + "\n".join(f"  {name:<16}{help_}" for name, (_, help_) in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="sandra",
        description="Sandra Desktop: hold a button, speak, let go, and it answers out loud.",
        epilog=epilog + "\n\n'sandra COMMAND --help' tells more about a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"Sandra Desktop {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail on the console (-vv for debug)")
    parser.add_argument("--self-test", action="store_true", help="run headless checks and exit")
    parser.add_argument("--screenshot", metavar="PATH", help="render the window offscreen to a PNG and exit")
    parser.add_argument("--demo", action="store_true", help="with --screenshot: fill the window with a sample call")
    parser.add_argument("--size", default="1100x720", metavar="WxH", help="with --screenshot: window size")
    return parser


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _call(SUBCOMMANDS[argv[0]][0], argv[1:])

    args = build_parser().parse_args(argv)
    from base.logs import setup_logging

    if args.self_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        setup_logging(args.verbose, log_file="selftest.log", console=args.verbose > 0)
        from base import selftest

        return 0 if selftest.run(SELF_TEST_CHECKS, sys.stdout, verbose=args.verbose > 0) else 1

    setup_logging(args.verbose)
    if args.screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return _call("gui.app:screenshot", [args.screenshot, args.size, "demo" if args.demo else ""])
    if not has_display() and os.environ.get("QT_QPA_PLATFORM", "") not in ("offscreen", "minimal"):
        print(
            "sandra: no display found (DISPLAY and WAYLAND_DISPLAY are unset). Run it on a desktop, "
            "or try 'xvfb-run python main.py', or 'python main.py --screenshot window.png'.",
            file=sys.stderr,
        )
        return 1
    return _call("gui.app:run", [])


def check_talk_turn() -> str:
    """The client's engine asks the embedded server a question spoken by the server's voice."""
    import asyncio

    from core.selftest import talk_turn
    from server.realtime.tts import Synthesizer

    synthesizer = Synthesizer()
    try:
        question = asyncio.run(synthesizer.synthesize("what time is it"))
    finally:
        synthesizer.close()
    return talk_turn(question)


# --self-test, cheap checks first, real calls last. Only this module knows all three
# sides (client, window, server), so the list lives here.
SELF_TEST_CHECKS: list[tuple[str, str | Callable[[], str]]] = [
    ("runtime libraries", "base.selftest:check_runtime"),
    ("sound library", "base.selftest:check_portaudio"),
    ("main window", "gui.selftest:selftest_check"),
    ("metrics receiver", "server.metrics.selftest:selftest_check"),
    ("local server: speech in, speech out", "server.realtime.selftest:selftest_check"),
    ("push-to-talk turn with the embedded server", check_talk_turn),
]


if __name__ == "__main__":
    sys.exit(main())
